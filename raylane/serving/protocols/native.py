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

from raylane.onnx_model import Prediction
from raylane.schema import FeatureSchema
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


class ColumnMetadata(BaseModel):
    name: str
    kind: str
    dtype: str
    nullable: bool
    categories: list[str] | None = None


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
    last_error: dict[str, Any] | None = Field(
        description="The last failed load or swap (the old model kept serving), if any."
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
    return json_response(
        {"status": "ok", "model_name": model.name, "model_version": model.version}
    )


async def metadata(plane: DataPlane, request: Request) -> Response:
    model = plane.holder.current
    if model is None:
        return json_response({"error": "no model loaded yet", "field": None,
                              "reason": "not_ready", "last_error": plane.holder.last_error},
                             503)
    reg = model.registered
    return json_response({
        "name": reg.name, "version": reg.version, "alias": reg.alias, "model_uri": model.uri,
        "run_id": reg.run_id, "task": reg.schema.task, "target": reg.schema.target,
        "inputs": [c.model_dump() for c in reg.schema.columns],
        "outputs": v2_outputs(reg.schema),
        "class_labels": reg.schema.class_labels, "loaded_at": model.loaded_at,
        "last_error": plane.holder.last_error,
    })


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
