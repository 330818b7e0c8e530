"""The Open Inference Protocol (KServe V2): ``/v2``, health, model metadata and ``.../infer``.

A request carries one input per column (``[N]`` or ``[N, 1]``), or one ``[N, F]`` numeric tensor
when every feature is numeric. JSON tensors only: the binary tensor extension is answered 400.
Each tensor is checked before anything runs (:mod:`~raylane.serving.protocols.v2_tensors`); the
bodies' pydantic models, for OpenAPI only, are in :mod:`~raylane.serving.protocols.v2_datamodels`.
Errors are ``{"error", "field", "reason"}``; an unknown model or version is 404.

An inference response carries the prediction ids (one per row, the ids the prediction log records,
to join labels on later) as ``parameters.prediction_ids``: the ids joined with commas, in row order
(``.split(",")``). The protocol allows only a boolean, number or string as a parameter value, and
an extra output tensor would change the outputs a client asked for.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

import raylane
from raylane.model.feeds import Feeds, RequestError, feeds_from_columns, plan_for
from raylane.model.onnx_model import Prediction
from raylane.model.schema import FeatureSchema
from raylane.serving.dataplane import DataPlane, class_labels, not_ready
from raylane.serving.http_io import json_response
from raylane.serving.layouts import check_names
from raylane.serving.limits import check_rows
from raylane.serving.loaded_model import LoadedModel
from raylane.serving.protocols.base import (
    ERRORS,
    Protocol,
    Route,
    answer,
    error_body,
    require_object,
)
from raylane.serving.protocols.v2_datamodels import (
    Live,
    Ready,
    V2InferRequest,
    V2InferResponse,
    V2ModelMetadata,
    V2ServerMetadata,
)
from raylane.serving.protocols.v2_tensors import (
    V2_NUMERIC,
    Tensor,
    check_parameters,
    check_tensor,
)

# ---------------------------------------------------------------- parsing and responses


def parse_v2(obj: Any, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    """The model's inputs from an inference request; its requested outputs are checked too."""
    feeds, n = _parse_inputs(obj, schema, max_rows)
    v2_requested_outputs(obj, schema)
    return feeds, n


def _parse_inputs(obj: Any, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    body = require_object(obj, '"inputs"')
    check_parameters(body.get("parameters"), "parameters")
    tensors = body.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise RequestError(
            "inputs: expected a non-empty list of tensors", field="inputs",
            reason="missing_field",
        )
    plan = plan_for(schema)
    width = len(plan.names)
    if len(tensors) > width:
        raise RequestError(
            f"inputs: {len(tensors)} tensors, but the model has {width} features (one input "
            "per column, or one [N, F] tensor)", field="inputs", reason="too_many_columns",
        )
    inputs = [check_tensor(inp, i, max_rows, width) for i, inp in enumerate(tensors)]
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].name not in plan.keys:
        return _v2_matrix(inputs[0], schema, max_rows)
    given = [name for name, *_ in inputs]
    if set(given) != plan.keys:
        check_names(given, schema, "inputs")
    if len(inputs) != width:
        raise RequestError("inputs: duplicate input names", field="inputs",
                           reason="duplicate_column")
    kinds = plan.kinds
    columns: dict[str, list] = {}
    n = None
    for name, datatype, shape, flat in inputs:
        kind = kinds[name]
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise RequestError(
                f"input {name!r}: expected shape [N] or [N, 1], got {shape}", field=name,
                reason="wrong_shape",
            )
        if kind == "numeric" and datatype not in V2_NUMERIC:
            raise RequestError(
                f"input {name!r}: expected a numeric datatype (FP32, FP64, INT64, BOOL, ...) "
                f"for a numeric column, got {datatype}",
                field=name,
                reason="wrong_type",
            )
        if kind == "categorical" and datatype != "BYTES":
            raise RequestError(
                f"input {name!r}: expected datatype BYTES for a categorical column, got {datatype}",
                field=name,
                reason="wrong_type",
            )
        if n is None:
            n = shape[0]
            check_rows(n, max_rows, "inputs")
        elif shape[0] != n:
            raise RequestError(
                f"input {name!r}: {shape[0]} rows, but other inputs have {n}", field=name,
                reason="wrong_shape",
            )
        columns[name] = flat
    return feeds_from_columns(columns, schema, n or 0), n or 0


def _v2_matrix(inp: Tensor, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    name, datatype, shape, flat = inp
    if schema.categorical:
        raise RequestError(
            f"input {name!r}: one [N, F] tensor needs a model with only numeric features; this "
            f"model has categorical columns {schema.categorical}: send one input per column",
            field=name,
            reason="wrong_shape",
        )
    n, width = shape
    names = schema.feature_names
    if width != len(names):
        raise RequestError(
            f"input {name!r}: expected shape [N, {len(names)}] (columns {names}), got {shape}",
            field=name,
            reason="wrong_shape",
        )
    if datatype not in V2_NUMERIC:
        raise RequestError(
            f"input {name!r}: expected a numeric datatype such as FP32, got {datatype}",
            field=name,
            reason="wrong_type",
        )
    check_rows(n, max_rows, "inputs")
    # one column per feature, so errors name the column (and its own type's range applies)
    return feeds_from_columns({c: flat[j::width] for j, c in enumerate(names)}, schema, n), n


def v2_outputs(schema: FeatureSchema) -> list[dict]:
    if schema.task == "regression":
        return [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
    k = len(schema.class_labels or [])
    return [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
    ]


def v2_inputs(schema: FeatureSchema) -> list[dict]:
    return [
        {"name": c.name, "datatype": "FP32" if c.kind == "numeric" else "BYTES", "shape": [-1]}
        for c in schema.columns
    ]


def v2_requested_outputs(obj: dict, schema: FeatureSchema) -> list[str]:
    available = [o["name"] for o in v2_outputs(schema)]
    wanted = obj.get("outputs")
    if wanted is None:
        return available
    if not isinstance(wanted, list) or len(wanted) > len(available) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in wanted
    ):
        raise RequestError(
            f'outputs: expected a list of at most {len(available)} {{"name": ...}} objects '
            f"(names of {available})", field="outputs", reason="wrong_type",
        )
    for j, o in enumerate(wanted):
        check_parameters(o.get("parameters"), f"outputs[{j}].parameters")
    names = [o["name"] for o in wanted]
    unknown = [o for o in names if o not in available]
    if unknown:
        raise RequestError(
            f"outputs: unknown output(s) {unknown}; the model has {available}", field="outputs",
            reason="unknown_output",
        )
    return names


def v2_response(model: LoadedModel, pred: Prediction, n: int, obj: Any, ids: list[str]) -> dict:
    outputs = v2_requested_outputs(obj, model.schema)
    tensors = []
    for out in outputs:
        if out == "predictions":
            tensors.append({"name": out, "datatype": "FP32", "shape": [n], "data": pred.values})
        elif out == "label":
            tensors.append({"name": out, "datatype": "BYTES", "shape": [n],
                            "data": class_labels(model.schema, pred)})
        else:
            probs = pred.probabilities
            tensors.append(
                {"name": out, "datatype": "FP32", "shape": list(probs.shape),
                 "data": probs.reshape(-1)}
            )
    body = {"model_name": model.name, "model_version": model.version,
            "parameters": {"prediction_ids": ",".join(ids)}, "outputs": tensors}
    request_id = obj.get("id")
    if request_id is not None:
        body["id"] = request_id
    return body


def model_or_error(plane: DataPlane, name: str, version: str | None = None) -> LoadedModel:
    """The served model if ``name`` (and ``version``, if given) are what is served; else 404."""
    model = plane.holder.current
    if model is None:
        raise not_ready()
    if name != model.name:
        raise RequestError(
            f"unknown model {name!r}; this server serves {model.name!r}", status=404,
            field="model_name", reason="unknown_model",
        )
    if version is not None and version != model.version:
        raise RequestError(
            f"model {name!r} version {version!r} is not loaded; serving version "
            f"{model.version!r}", status=404, field="model_version", reason="unknown_version",
        )
    return model


# ---------------------------------------------------------------- handlers


async def server_metadata(plane: DataPlane, request: Request) -> Response:
    return json_response({"name": "raylane", "version": raylane.__version__, "extensions": []})


async def live(plane: DataPlane, request: Request) -> Response:
    return json_response({"live": True})


async def ready(plane: DataPlane, request: Request) -> Response:
    is_ready = plane.holder.current is not None
    return json_response({"ready": is_ready}, 200 if is_ready else 503)


async def model_metadata(
    plane: DataPlane, request: Request, name: str, version: str | None = None
) -> Response:
    try:
        model = model_or_error(plane, name, version)
    except RequestError as err:
        return json_response(error_body(err), err.status)
    return json_response({
        "name": model.name, "versions": [model.version], "platform": "onnxruntime_onnx",
        "inputs": v2_inputs(model.schema), "outputs": v2_outputs(model.schema),
    })


async def model_ready(
    plane: DataPlane, request: Request, name: str, version: str | None = None
) -> Response:
    try:
        model_or_error(plane, name, version)
    except RequestError as err:
        return json_response(error_body(err), err.status)
    return json_response({"ready": True})


async def infer(
    plane: DataPlane, request: Request, name: str, version: str | None = None
) -> Response:
    try:
        model_or_error(plane, name, version)
        if "inference-header-content-length" in request.headers:
            raise RequestError(
                "the binary tensor extension is not supported; send JSON tensors "
                "(tritonclient.http: binary_data=False for inputs and outputs)",
                field="Inference-Header-Content-Length", reason="binary_tensor",
            )
    except RequestError as err:
        plane.telemetry.rejected_request(err.reason, "v2_infer")
        return json_response(error_body(err), err.status)
    return await answer(plane, request, "v2_infer", parse_v2, v2_response)


_MODEL = "/v2/models/{name}"
_VERSION = "/v2/models/{name}/versions/{version}"
_INFER = {"response_model": V2InferResponse, "responses": ERRORS, "body": (V2InferRequest,)}

PROTOCOL = Protocol(
    name="v2",
    routes=(
        Route("GET", "/v2", server_metadata, "v2_server", response_model=V2ServerMetadata),
        Route("GET", "/v2/health/live", live, "v2_live", response_model=Live),
        Route("GET", "/v2/health/ready", ready, "v2_ready", response_model=Ready,
              responses={503: ERRORS[503]}),
        Route("GET", _MODEL, model_metadata, "v2_model", response_model=V2ModelMetadata,
              responses=ERRORS),
        Route("GET", _VERSION, model_metadata, "v2_model_version",
              response_model=V2ModelMetadata, responses=ERRORS),
        Route("GET", f"{_MODEL}/ready", model_ready, "v2_model_ready", response_model=Ready,
              responses=ERRORS),
        Route("GET", f"{_VERSION}/ready", model_ready, "v2_model_version_ready",
              response_model=Ready, responses=ERRORS),
        Route("POST", f"{_MODEL}/infer", infer, "v2_infer", **_INFER),
        Route("POST", f"{_VERSION}/infer", infer, "v2_infer_version", **_INFER),
    ),
)
