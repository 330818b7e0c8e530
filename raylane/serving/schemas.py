"""Pydantic models that *describe* the HTTP API in the OpenAPI schema.

Request bodies are parsed and validated by hand on the hot path (``protocols.py``); these models
document them (and the responses) without costing a validation pass per request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

Value = float | int | bool | str | None


class ErrorResponse(BaseModel):
    """A client error (4xx) or an unavailable model (503)."""

    error: str = Field(description="What was wrong and what was expected.")
    field: str | None = Field(None, description="The field or column at fault.")
    reason: str = Field(description="Machine-readable reason, e.g. missing_column, too_many_rows.")


class MlflowErrorResponse(BaseModel):
    error_code: str = Field(description="BAD_REQUEST, PAYLOAD_TOO_LARGE, ...")
    message: str
    field: str | None = None
    reason: str


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


class DataframeSplit(BaseModel):
    columns: list[str]
    data: list[list[Value]]
    index: list[Any] | None = None


class InvocationsRequest(BaseModel):
    """Exactly one of the four keys (MLflow scoring protocol)."""

    dataframe_split: DataframeSplit | None = None
    dataframe_records: list[dict[str, Value]] | None = None
    instances: list[dict[str, Value]] | None = None
    inputs: dict[str, list[Value]] | list[dict[str, Value]] | None = None


class InvocationsResponse(BaseModel):
    predictions: list[str] | list[float]


class V2Parameters(BaseModel):
    model_config = {"extra": "allow"}
    content_type: str | None = None


class V2Tensor(BaseModel):
    name: str
    datatype: str = Field(description="BOOL, UINT8..64, INT8..64, FP16/32/64 or BYTES.")
    shape: list[int]
    data: list[Any] = Field(description="Row-major, flat or nested.")
    parameters: V2Parameters | None = None


class V2RequestedOutput(BaseModel):
    name: str


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: V2Parameters | None = None
    inputs: list[V2Tensor] = Field(
        description="One input per column ([N] or [N,1]) or one [N, F] numeric tensor."
    )
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[V2Tensor]


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


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


REQUEST_MODELS = [PredictRecords, PredictSplit, InvocationsRequest, V2InferRequest]


def request_component_schemas() -> dict[str, Any]:
    """JSON schemas of the request bodies, referenced as ``#/components/schemas/<Model>``."""
    _, top = models_json_schema(
        [(m, "validation") for m in REQUEST_MODELS], ref_template="#/components/schemas/{model}"
    )
    return top.get("$defs", {})


def json_body(*models: type[BaseModel], csv: bool = False) -> dict:
    """``openapi_extra`` describing a JSON request body (one of ``models``)."""
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    content: dict[str, Any] = {
        "application/json": {"schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}
    }
    if csv:
        content["text/csv"] = {"schema": {"type": "string", "description": "header row + rows"}}
    return {"requestBody": {"required": True, "content": content}}
