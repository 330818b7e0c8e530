"""The MLflow scoring protocol: ``POST /invocations``, ``/ping``, ``/health`` and ``/version``.

``/invocations`` takes ``dataframe_split``, ``dataframe_records``, ``instances`` or ``inputs``
(JSON) or ``text/csv`` with a header row. Errors are MLflow's ``{"error_code", "message"}`` (plus
``field`` and ``reason``).

An ``/invocations`` answer is MLflow's ``{"predictions": [...]}`` plus a top-level
``"prediction_ids"`` list, one id per row (the ids the prediction log records, to join labels on
later). MLflow's own client (``mlflow.deployments.PredictionsResponse``) reads ``predictions`` and
keeps other keys; a response header was not chosen because the ids of a 10,000-row request
(~350 KB) exceed the header limits of common HTTP clients and proxies.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

import raylane
from raylane.model.feeds import Feeds, RequestError, feeds_from_columns, plan_for
from raylane.model.onnx_model import Prediction
from raylane.model.schema import FeatureSchema
from raylane.serving.dataplane import DataPlane, class_labels
from raylane.serving.layouts import (
    check_columns,
    columns_from_columnar,
    columns_from_records,
    columns_from_split,
)
from raylane.serving.limits import check_rows
from raylane.serving.loaded_model import LoadedModel
from raylane.serving.protocols.base import Protocol, Route, answer, require_object

MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
MLFLOW_CODES = {400: "BAD_REQUEST", 404: "RESOURCE_DOES_NOT_EXIST", 413: "PAYLOAD_TOO_LARGE",
                415: "UNSUPPORTED_MEDIA_TYPE", 500: "INTERNAL_ERROR",
                503: "TEMPORARILY_UNAVAILABLE"}
Value = float | int | bool | str | None


# ---------------------------------------------------------------- OpenAPI models


class MlflowErrorResponse(BaseModel):
    error_code: str = Field(description="BAD_REQUEST, PAYLOAD_TOO_LARGE, ...")
    message: str
    field: str | None = None
    reason: str


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
    prediction_ids: list[str] = Field(
        description="One id per row (UUIDv7 hex), as recorded by the prediction log."
    )


MLFLOW_ERRORS = {c: {"model": MlflowErrorResponse} for c in (400, 413, 415, 500, 503)}


# ---------------------------------------------------------------- parsing and responses


def error_body(err: RequestError) -> dict:
    return {"error_code": MLFLOW_CODES.get(err.status, "BAD_REQUEST"), "message": err.message,
            "field": err.field, "reason": err.reason}


def parse_invocations(obj: Any, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    """Exactly one of :data:`MLFLOW_KEYS`; ``inputs`` may be records or ``{column: values}``."""
    body = require_object(obj, f"exactly one of {list(MLFLOW_KEYS)}")
    keys = [k for k in MLFLOW_KEYS if k in body]
    if len(keys) != 1:
        raise RequestError(
            f"body: expected exactly one of {list(MLFLOW_KEYS)}, got "
            f"{keys or sorted(body)}",
            field="body",
            reason="missing_field" if not keys else "ambiguous_body",
        )
    key = keys[0]
    payload = body[key]
    if key == "dataframe_split":
        split = require_object(payload, '"columns" and "data"')
        if "columns" not in split or "data" not in split:
            raise RequestError(
                'dataframe_split: expected "columns" and "data"', field="dataframe_split",
                reason="missing_field",
            )
        columns, n = columns_from_split(
            split["columns"], split["data"], schema, max_rows, "dataframe_split"
        )
    elif isinstance(payload, dict):  # {"inputs": {col: [values]}} (columnar)
        columns, n = columns_from_columnar(payload, schema, max_rows, key)
    else:
        columns, n = columns_from_records(payload, schema, max_rows, key)
    return feeds_from_columns(columns, schema, n), n


def parse_csv(body: bytes, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    """``text/csv`` with a header row; empty numeric cells are missing values.

    A UTF-8 byte-order mark (what Excel writes) is dropped; blank lines are skipped; a row with
    more or fewer cells than the header is an error naming it.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise RequestError(
            f"CSV body: line {line} is not valid UTF-8 (byte {body[exc.start]:#04x})",
            field="body", reason="malformed_csv",
        ) from None
    reader = csv.reader(_lines(text))
    try:
        header = next(reader, None)
        if header is None:
            raise RequestError("CSV body: expected a header row", field="body",
                               reason="empty_body")
        # bounded before any row is read; which names, after (a bad cell is reported first)
        check_columns(header, schema, "csv.columns", names=False)
        converted = _csv_rows(reader, header, plan_for(schema).bounds, max_rows)
    except csv.Error as exc:
        raise RequestError(f"CSV body: line {reader.line_num}: {exc}", field="body",
                           reason="malformed_csv") from None
    check_rows(len(converted), max_rows, "csv.data")
    columns, n = columns_from_split(header, converted, schema, max_rows, "csv")
    return feeds_from_columns(columns, schema, n), n


def _csv_rows(reader: Any, header: list[str], bounds: dict, max_rows: int) -> list[list]:
    """The rows under ``header``, numeric cells parsed; read one at a time and stopped at the
    first row (or blank line) over ``max_rows``."""
    parsers = [_cell_parser(bounds, name) for name in header]
    converted: list[list] = []
    blank = 0
    for row in reader:
        if not row:
            blank += 1
            if blank > max_rows:
                raise RequestError(
                    f"CSV body: more than {max_rows} blank lines", field="body",
                    reason="malformed_csv",
                )
            continue
        i = len(converted)
        if i == max_rows:
            raise RequestError(
                f"csv.data: more than {max_rows} rows is over the limit of {max_rows} rows per "
                "request; split the batch",
                field="csv.data",
                reason="too_many_rows",
            )
        if len(row) != len(header):
            raise RequestError(
                f"CSV row {i} (line {reader.line_num}): {len(row)} cells, but the header has "
                f"{len(header)} ({', '.join(header)})",
                field=f"csv row {i}",
                reason="wrong_shape",
            )
        out = []
        for name, parse, cell in zip(header, parsers, row, strict=True):
            if parse is None or cell == "":
                out.append(None if cell == "" else cell)
                continue
            try:
                out.append(parse(cell))
            except ValueError:
                raise RequestError(
                    f"column {name!r}: expected a number or an empty cell, got {cell!r} "
                    f"(row {i})",
                    field=name,
                    reason="wrong_type",
                ) from None
        converted.append(out)
    return converted


def _lines(text: str) -> Iterator[str]:
    """``text`` line by line, each sliced when the reader asks for it (a ``StringIO`` would hold
    the whole body again, at four bytes a character)."""
    start, end = 0, len(text)
    while start < end:
        stop = text.find("\n", start)
        stop = end if stop < 0 else stop + 1
        yield text[start:stop]
        start = stop


def _cell_parser(bounds: dict, name: str):
    """How to read a cell of column ``name``: None (a string), float, or int-or-float (an integer
    column: an integer cell is read exactly, so its range check is exact)."""
    if name not in bounds:
        return None
    return float if bounds[name] is None else _int_or_float


def _int_or_float(cell: str) -> int | float:
    try:
        return int(cell)
    except ValueError:
        return float(cell)


def invocations_response(
    model: LoadedModel, pred: Prediction, n: int, obj: Any, ids: list[str]
) -> dict:
    if pred.values is not None:
        return {"predictions": pred.values, "prediction_ids": ids}
    return {"predictions": class_labels(model.schema, pred), "prediction_ids": ids}


# ---------------------------------------------------------------- handlers


async def invocations(plane: DataPlane, request: Request) -> Response:
    return await answer(plane, request, "invocations", parse_invocations, invocations_response,
                        errors=error_body, parse_bytes=parse_csv)


async def ping(plane: DataPlane, request: Request) -> Response:
    is_ready = plane.holder.current is not None
    return Response("\n", status_code=200 if is_ready else 503, media_type="text/plain")


async def version(plane: DataPlane, request: Request) -> Response:
    return Response(f"raylane {raylane.__version__}", media_type="text/plain")


PROTOCOL = Protocol(
    name="mlflow_scoring",
    routes=(
        Route("POST", "/invocations", invocations, "invocations",
              response_model=InvocationsResponse, responses=MLFLOW_ERRORS,
              body=(InvocationsRequest,), csv=True),
        Route("GET", "/ping", ping, "ping", response_class=Response,
              responses={503: MLFLOW_ERRORS[503]}),
        Route("GET", "/health", ping, "health", response_class=Response,
              responses={503: MLFLOW_ERRORS[503]}),
        Route("GET", "/version", version, "version", response_class=Response),
    ),
)
