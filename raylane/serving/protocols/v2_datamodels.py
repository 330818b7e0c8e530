"""The Open Inference Protocol's bodies as pydantic models, for the OpenAPI document only.

Requests are parsed by hand (:mod:`raylane.serving.protocols.v2_tensors`, on the hot path); these
models describe them, and the responses, to clients and tools (as KServe's ``v2_datamodels``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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


class V2ResponseParameters(BaseModel):
    prediction_ids: str = Field(
        description="The rows' prediction ids (UUIDv7 hex) joined with commas, in row order."
    )


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: V2ResponseParameters
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
