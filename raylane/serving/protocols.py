"""The three request shapes the server speaks, to model inputs, and outputs back to JSON.

- ``/predict``: ``{"records": [...]}`` or ``{"columns": [...], "data": [[...]]}``.
- Open Inference Protocol (KServe V2) ``/v2/.../infer``: one input per column, or one
  ``[N, F]`` numeric tensor when every feature is numeric.
- MLflow scoring ``/invocations``: ``dataframe_split``, ``dataframe_records``, ``instances``,
  ``inputs`` (JSON) and ``text/csv``.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from typing import Any

import numpy as np

from raylane.onnx_model import Prediction
from raylane.schema import FeatureSchema
from raylane.serving.requests import (
    Feeds,
    RequestError,
    check_names,
    check_rows,
    columns_from_columnar,
    columns_from_records,
    columns_from_split,
    feeds_from_columns,
    numeric_column,
)

V2_NUMERIC = {
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64",
}
V2_DATATYPES = V2_NUMERIC | {"BYTES"}
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _require_object(obj: Any, what: str) -> dict:
    if not isinstance(obj, dict):
        raise RequestError(
            f"body: expected a JSON object with {what}, got {type(obj).__name__}",
            field="body",
            reason="wrong_type",
        )
    return obj


# ---------------------------------------------------------------- /predict


def parse_predict(obj: Any, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    """``{"records": [...]}`` or ``{"columns": [...], "data": [[...]]}``."""
    body = _require_object(obj, '"records" or "columns" + "data"')
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


def predict_response(name: str, version: str, schema: FeatureSchema, pred: Prediction) -> dict:
    if pred.values is not None:
        return {"model_name": name, "model_version": version, "predictions": pred.values}
    return {
        "model_name": name,
        "model_version": version,
        "predictions": class_labels(schema, pred),
        "probabilities": pred.probabilities,
        "class_labels": schema.class_labels,
    }


def class_labels(schema: FeatureSchema, pred: Prediction) -> list[str]:
    labels = schema.class_labels or []
    return [labels[i] for i in pred.labels.tolist()]


# ---------------------------------------------------------------- MLflow /invocations


def parse_invocations(obj: Any, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    body = _require_object(obj, f"exactly one of {list(MLFLOW_KEYS)}")
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
        split = _require_object(payload, '"columns" and "data"')
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
    """``text/csv`` with a header row; empty numeric cells are missing values."""
    try:
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RequestError(f"CSV body: {exc}", field="body", reason="malformed_csv") from None
    if not rows:
        raise RequestError("CSV body: expected a header row", field="body", reason="empty_body")
    header, data = rows[0], [r for r in rows[1:] if r]
    numeric = set(schema.numeric)
    converted = []
    for i, row in enumerate(data):
        out = []
        for name, cell in zip(header, row, strict=False):
            if name in numeric:
                try:
                    out.append(None if cell == "" else float(cell))
                except ValueError:
                    raise RequestError(
                        f"column {name!r}: expected a number or an empty cell, got {cell!r} "
                        f"(row {i})",
                        field=name,
                        reason="wrong_type",
                    ) from None
            else:
                out.append(None if cell == "" else cell)
        converted.append(out)
    columns, n = columns_from_split(header, converted, schema, max_rows, "csv")
    return feeds_from_columns(columns, schema, n), n


def invocations_response(schema: FeatureSchema, pred: Prediction) -> dict:
    if pred.values is not None:
        return {"predictions": pred.values}
    return {"predictions": class_labels(schema, pred)}


# ---------------------------------------------------------------- Open Inference Protocol


def _flatten(data: Any) -> list:
    while data and isinstance(data[0], list):
        data = list(itertools.chain.from_iterable(data))
    return data


def _v2_input(inp: Any, i: int) -> tuple[str, str, list[int], list]:
    field = f"inputs[{i}]"
    if not isinstance(inp, dict):
        raise RequestError(f"{field}: expected an object", field=field, reason="wrong_type")
    for key in ("name", "datatype", "shape", "data"):
        if key not in inp:
            raise RequestError(
                f"{field}: missing '{key}' (each input needs name, datatype, shape and data)",
                field=f"{field}.{key}",
                reason="missing_field",
            )
    if (inp.get("parameters") or {}).get("binary_data_size") is not None:
        raise RequestError(
            f"{field}: binary tensor data is not supported; send JSON tensors "
            "(tritonclient: binary_data=False)",
            field=f"{field}.parameters.binary_data_size",
            reason="binary_tensor",
        )
    name, datatype, shape, data = inp["name"], inp["datatype"], inp["shape"], inp["data"]
    if not isinstance(name, str):
        raise RequestError(f"{field}.name: expected a string", field=f"{field}.name",
                           reason="wrong_type")
    if datatype not in V2_DATATYPES:
        raise RequestError(
            f"{field} {name!r}: datatype {datatype!r} is not one of {sorted(V2_DATATYPES)}",
            field=name,
            reason="wrong_type",
        )
    if not (isinstance(shape, list) and shape and all(type(d) is int and d >= 0 for d in shape)):
        raise RequestError(
            f"{field} {name!r}: shape must be a list of non-negative integers, got {shape!r}",
            field=name,
            reason="wrong_shape",
        )
    if not isinstance(data, list):
        raise RequestError(
            f"{field} {name!r}: data must be a list (flat or nested, row-major)",
            field=name,
            reason="wrong_type",
        )
    flat = _flatten(data)
    if len(flat) != math.prod(shape):
        raise RequestError(
            f"{field} {name!r}: shape {shape} needs {math.prod(shape)} values, data has "
            f"{len(flat)}",
            field=name,
            reason="wrong_shape",
        )
    return name, datatype, shape, flat


def parse_v2(obj: Any, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
    body = _require_object(obj, '"inputs"')
    if "inputs" not in body or not isinstance(body["inputs"], list) or not body["inputs"]:
        raise RequestError(
            "inputs: expected a non-empty list of tensors", field="inputs",
            reason="missing_field",
        )
    inputs = [_v2_input(inp, i) for i, inp in enumerate(body["inputs"])]
    names = schema.feature_names
    if len(inputs) == 1 and len(inputs[0][2]) == 2 and inputs[0][0] not in names:
        return _v2_matrix(inputs[0], schema, max_rows)
    check_names([name for name, *_ in inputs], schema, "inputs")
    if len(inputs) != len(names):
        raise RequestError("inputs: duplicate input names", field="inputs",
                           reason="duplicate_column")
    columns: dict[str, list] = {}
    n = None
    for name, datatype, shape, flat in inputs:
        kind = schema.column(name).kind
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


def _v2_matrix(inp: tuple, schema: FeatureSchema, max_rows: int) -> tuple[Feeds, int]:
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
    matrix = numeric_column(name, flat, n * width).reshape(n, width)
    return {c: np.ascontiguousarray(matrix[:, j : j + 1]) for j, c in enumerate(names)}, n


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
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and "name" in o for o in wanted):
        raise RequestError('outputs: expected a list of {"name": ...}', field="outputs",
                           reason="wrong_type")
    names = [o["name"] for o in wanted]
    unknown = [o for o in names if o not in available]
    if unknown:
        raise RequestError(
            f"outputs: unknown output(s) {unknown}; the model has {available}", field="outputs",
            reason="unknown_output",
        )
    return names


def v2_response(
    name: str, version: str, schema: FeatureSchema, pred: Prediction, n: int, outputs: list[str],
    request_id: Any,
) -> dict:
    tensors = []
    for out in outputs:
        if out == "predictions":
            tensors.append({"name": out, "datatype": "FP32", "shape": [n], "data": pred.values})
        elif out == "label":
            tensors.append(
                {"name": out, "datatype": "BYTES", "shape": [n], "data": class_labels(schema, pred)}
            )
        else:
            probs = pred.probabilities
            tensors.append(
                {"name": out, "datatype": "FP32", "shape": list(probs.shape),
                 "data": probs.reshape(-1)}
            )
    body = {"model_name": name, "model_version": version, "outputs": tensors}
    if request_id is not None:
        body["id"] = request_id
    return body
