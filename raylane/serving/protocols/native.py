"""Raylane's own protocol: ``POST /predict`` (records, or columns + data), health, metadata.

Errors are ``{"error", "field", "reason"}`` (:func:`~raylane.serving.protocols.base.error_body`).
A ``/predict`` answer carries ``prediction_ids``, one per row (the ids the prediction log records,
to join labels on later; see :mod:`raylane.serving.prediction_ids`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from raylane.model.onnx_model import Prediction
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.serving.columns import (
    Feeds,
    RequestError,
    columns_from_records,
    columns_from_split,
    feeds_from_columns,
)
from raylane.serving.dataplane import DataPlane, class_labels
from raylane.serving.http_io import json_response
from raylane.serving.predictor import LoadedModel
from raylane.serving.protocols.base import ERRORS, Protocol, Route, answer, require_object
from raylane.serving.protocols.v2 import V2TensorMetadata, v2_outputs

Value = float | int | bool | str | None


# ---------------------------------------------------------------- OpenAPI models


class PredictRecords(BaseModel):
    records: list[dict[str, Value]] = Field(description="One object per row, every column.")


class PredictSplit(BaseModel):
    columns: list[str] = Field(description="Every model column, in any order.")
    data: list[list[Value]] = Field(description="Rows, values in the order of `columns`.")


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[str] | list[float] = Field(
        description="Class labels (classification) or values (regression), one per row."
    )
    probabilities: list[list[float]] | None = Field(
        None, description="Per-row class probabilities in the order of `class_labels`."
    )
    class_labels: list[str] | None = None
    prediction_ids: list[str] = Field(
        description="One id per row (UUIDv7 hex): the key the prediction log records, to join "
        "labels on later."
    )


class Health(BaseModel):
    status: str
    model_name: str | None = None
    model_version: str | None = None
    load_state: str | None = Field(
        None, description="current, retrying (a newer version failed to load; retried with "
        "backoff) or gave_up (it cannot load; the served version stays)")
    pending_version: str | None = None


class ColumnMetadata(BaseModel):
    name: str
    kind: str
    dtype: str
    nullable: bool
    category_count: int | None = Field(
        None, description="Categorical columns: how many categories the model recorded in "
        "training (at most 200)."
    )
    categories: list[str] | None = Field(
        None, description="Only if the deployment opts in (`metadata_categories`): the first "
        "recorded categories, at most that many."
    )


class LoadError(BaseModel):
    model_uri: str | None
    version: str | None
    reason: str = Field(description="load_failed, warmup_failed, unsafe_model, model_not_found "
                        "or artifact_missing (details are in the replica's log).")
    at: float | None
    kept_version: str | None


class ModelMetadata(BaseModel):
    name: str
    version: str
    alias: str | None
    model_uri: str
    run_id: str | None = Field(description="The MLflow run that trained this version.")
    task: str
    target: str
    inputs: list[ColumnMetadata]
    outputs: list[V2TensorMetadata]
    class_labels: list[str] | None
    loaded_at: float
    last_error: LoadError | None = Field(
        description="The last failed load or swap (the old model kept serving), if any."
    )
    load_status: dict[str, Any] = Field(
        description="state (current, retrying, gave_up), pending_version, attempts, "
        "last_load_error (kind: exception type), next_retry_at, registry (reachable, since, "
        "last_error: whether the model registry answers the replica's polls)."
    )


# ---------------------------------------------------------------- parsing and responses


def parse_predict(obj: Any, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    """``{"records": [...]}`` or ``{"columns": [...], "data": [[...]]}``."""
    body = require_object(obj, '"records" or "columns" + "data"')
    if "records" in body:
        extra = set(body) - {"records"}
        if extra:
            raise RequestError(
                f"body: unexpected key(s) {sorted(extra)} next to 'records'",
                field=sorted(extra)[0],
                reason="unknown_field",
            )
        columns, n = columns_from_records(body["records"], schema, max_rows, "records")
    elif "columns" in body or "data" in body:
        extra = set(body) - {"columns", "data"}
        if extra or "columns" not in body or "data" not in body:
            raise RequestError(
                'body: expected both "columns" and "data" (and nothing else)',
                field="columns" if "columns" not in body else "data",
                reason="missing_field",
            )
        columns, n = columns_from_split(body["columns"], body["data"], schema, max_rows, "")
    else:
        raise RequestError(
            'body: expected {"records": [...]} or {"columns": [...], "data": [[...]]}',
            field="records",
            reason="missing_field",
        )
    return feeds_from_columns(columns, schema, n), n


def predict_response(
    model: LoadedModel, pred: Prediction, n: int, obj: Any, ids: list[str]
) -> dict:
    if pred.values is not None:
        return {"model_name": model.name, "model_version": model.version,
                "predictions": pred.values, "prediction_ids": ids}
    return {
        "model_name": model.name,
        "model_version": model.version,
        "predictions": class_labels(model.schema, pred),
        "probabilities": pred.probabilities,
        "class_labels": model.schema.class_labels,
        "prediction_ids": ids,
    }


# ---------------------------------------------------------------- handlers


async def predict(plane: DataPlane, request: Request) -> Response:
    return await answer(plane, request, "predict", parse_predict, predict_response)


async def healthz(plane: DataPlane, request: Request) -> Response:
    model = plane.holder.current
    if model is None:
        return json_response({"status": "loading"}, 503)
    load = plane.holder.status()
    return json_response(
        {"status": "ok", "model_name": model.name, "model_version": model.version,
         "load_state": load["state"], "pending_version": load["pending_version"]}
    )


async def metadata(plane: DataPlane, request: Request) -> Response:
    """What a client needs to call the model, and the state of its loads.

    Inputs are names, kinds, dtypes and, for categorical columns, the number of recorded
    categories; never the training data's values, unless the deployment opts in with
    ``metadata_categories: N`` (at most N per column, N <= 200; for a form that offers them).
    A failed load is a stable ``reason``; its exception text is only in the replica's log.
    """
    model = plane.holder.current
    last_error = public_load_error(plane.holder.last_error)
    if model is None:
        return json_response({"error": "no model loaded yet", "field": None,
                              "reason": "not_ready", "last_error": last_error}, 503)
    reg = model.registered
    shown = plane.settings.metadata_categories
    return json_response({
        "name": reg.name, "version": reg.version, "alias": reg.alias, "model_uri": model.uri,
        "run_id": reg.run_id, "task": reg.schema.task, "target": reg.schema.target,
        "inputs": [column_metadata(c, shown) for c in reg.schema.columns],
        "outputs": v2_outputs(reg.schema),
        "class_labels": reg.schema.class_labels, "loaded_at": model.loaded_at,
        "last_error": last_error, "load_status": plane.holder.status(),
    })


def column_metadata(column: ColumnSpec, shown: int = 0) -> dict:
    """A column as ``/metadata`` shows it: no category values unless ``shown`` > 0."""
    out: dict[str, Any] = {"name": column.name, "kind": column.kind, "dtype": column.dtype,
                           "nullable": column.nullable}
    if column.kind == "categorical":
        out["category_count"] = len(column.categories or [])
        if shown > 0:
            out["categories"] = (column.categories or [])[:shown]
    return out


_LOAD_REASONS = {"WarmupError": "warmup_failed", "UnsafeModelError": "unsafe_model"}


def public_load_error(last_error: dict | None) -> dict | None:
    """A failed load without its exception text (which may hold paths, hosts or credentials)."""
    if last_error is None:
        return None
    reason = last_error.get("reason")
    if not (isinstance(reason, str) and reason.replace("_", "").isalnum()):
        kind = str(last_error.get("error", "")).split(":", 1)[0]
        reason = _LOAD_REASONS.get(kind, "load_failed")
    return {"model_uri": last_error.get("model_uri"), "version": last_error.get("version"),
            "reason": reason, "at": last_error.get("at"),
            "kept_version": last_error.get("kept_version")}


PROTOCOL = Protocol(
    name="native",
    routes=(
        Route("POST", "/predict", predict, "predict", response_model=PredictResponse,
              responses=ERRORS, body=(PredictRecords, PredictSplit),
              summary="Predict rows given as records or as columns + data"),
        Route("GET", "/healthz", healthz, "healthz", response_model=Health,
              responses={503: ERRORS[503]}),
        Route("GET", "/metadata", metadata, "metadata", response_model=ModelMetadata,
              responses={503: ERRORS[503]}),
    ),
)
