"""Request bodies to typed model columns: JSON decoding, limits and per-column validation.

Everything here is on the hot path, so it works on plain lists and numpy arrays (no pandas, no
per-request pydantic). Every client mistake becomes a :class:`RequestError` naming the field and
what was expected; the routes render it in their protocol's error shape.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from raylane.schema import MISSING_CATEGORY, FeatureSchema

try:  # orjson is optional; it is several times faster than json for request bodies
    import orjson

    _loads = orjson.loads
    _JSONDecodeError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - exercised only without orjson
    orjson = None
    _loads = json.loads
    _JSONDecodeError = (ValueError,)

_F32_MAX = float(np.finfo(np.float32).max)
Feeds = dict[str, np.ndarray]


class RequestError(Exception):
    """A client mistake: HTTP status, message, the field at fault and a machine-readable reason."""

    def __init__(
        self, message: str, *, status: int = 400, field: str | None = None, reason: str = "invalid"
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field
        self.reason = reason


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; NaN/Infinity literals parse (and are rejected later, per column)."""
    if not body:
        raise RequestError("empty body: expected a JSON object", field="body", reason="empty_body")
    try:
        return _loads(body)
    except _JSONDecodeError:
        pass
    try:  # the stdlib accepts NaN/Infinity, which Python clients send; reject them by column later
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(
            f"malformed JSON: {exc}", field="body", reason="malformed_json"
        ) from None


def check_rows(n: int, max_rows: int, field: str) -> None:
    if n == 0:
        raise RequestError(
            f"{field}: empty batch; expected at least one row", field=field, reason="empty_batch"
        )
    if n > max_rows:
        raise RequestError(
            f"{field}: {n} rows is over the limit of {max_rows} rows per request; split the batch",
            field=field,
            reason="too_many_rows",
        )


def check_names(given: list[str] | Any, schema: FeatureSchema, field: str) -> None:
    """Exactly the model's columns: report missing and unknown ones by name."""
    expected = schema.feature_names
    names = set(given)
    missing = [c for c in expected if c not in names]
    unknown = sorted(str(c) for c in names if c not in set(expected))
    if missing:
        raise RequestError(
            f"{field}: missing column(s) {missing}; the model expects {expected}",
            field=missing[0],
            reason="missing_column",
        )
    if unknown:
        raise RequestError(
            f"{field}: unknown column(s) {unknown}; the model expects {expected}",
            field=unknown[0],
            reason="unknown_column",
        )


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def numeric_column(name: str, values: Any, n: int) -> np.ndarray:
    """A ``[N, 1]`` float32 column; ``null`` is a missing value, strings and NaN are errors."""
    arr: np.ndarray | None
    try:
        arr = np.asarray(values)
    except (ValueError, TypeError):
        arr = None
    if arr is not None and arr.dtype.kind in "iufb" and arr.ndim == 1:
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32)
        if arr.dtype.kind == "f":
            finite = np.isfinite(out)
            if not finite.all():
                i = int(np.argmin(finite))
                raise RequestError(
                    f"column {name!r}: expected a finite number or null, got {_describe(values[i])}"
                    f" (row {i}; float32 range is +-{_F32_MAX:.3g})",
                    field=name,
                    reason="non_finite",
                )
    else:
        out = np.empty(n, dtype=np.float32)
        for i, v in enumerate(values):
            t = type(v)
            if v is None:
                out[i] = np.nan
            elif t is int or t is float or t is bool:
                if not math.isfinite(v) or abs(v) > _F32_MAX:
                    raise RequestError(
                        f"column {name!r}: expected a finite number or null, got {_describe(v)}"
                        f" (row {i})",
                        field=name,
                        reason="non_finite",
                    )
                out[i] = v
            else:
                kind = "a string" if t is str else f"a {t.__name__}"
                raise RequestError(
                    f"column {name!r}: expected a number or null, got {kind} {_describe(v)}"
                    f" (row {i})",
                    field=name,
                    reason="wrong_type",
                )
    if out.shape[0] != n:
        raise RequestError(
            f"column {name!r}: expected {n} values (one per row), got {out.shape[0]}",
            field=name,
            reason="wrong_shape",
        )
    return out.reshape(n, 1)


def categorical_column(name: str, values: Any, n: int) -> np.ndarray:
    """A ``[N, 1]`` string column; ``null`` is the missing category; integers are accepted."""
    values = list(values)
    if len(values) != n:
        raise RequestError(
            f"column {name!r}: expected {n} values (one per row), got {len(values)}",
            field=name,
            reason="wrong_shape",
        )
    if not all(type(v) is str for v in values):
        fixed = []
        for i, v in enumerate(values):
            t = type(v)
            if t is str:
                fixed.append(v)
            elif v is None:
                fixed.append(MISSING_CATEGORY)
            elif t is int or t is bool:
                fixed.append(str(v))
            else:
                raise RequestError(
                    f"column {name!r}: expected a string (a category) or null, got "
                    f"{_describe(v)} (row {i})",
                    field=name,
                    reason="wrong_type",
                )
        values = fixed
    return np.array(values, dtype=object).reshape(n, 1)


class _Plan:
    """Column names of a schema, computed once (schema properties rebuild lists per call)."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        self.names = schema.feature_names
        self.keys = set(self.names)
        self.numeric = schema.numeric
        self.categorical = schema.categorical


_PLANS: dict[int, _Plan] = {}


def plan_for(schema: FeatureSchema) -> _Plan:
    plan = _PLANS.get(id(schema))
    if plan is None or plan.schema is not schema:
        if len(_PLANS) > 64:
            _PLANS.clear()
        plan = _PLANS[id(schema)] = _Plan(schema)
    return plan


def feeds_from_columns(columns: dict[str, Any], schema: FeatureSchema, n: int) -> Feeds:
    """Convert ``{column: values}`` (already checked for names) into the graph's inputs.

    Fast path: all numeric columns as one array (one conversion, one finiteness check); any
    irregularity falls back to the per-column path, which names the offending column and row.
    """
    plan = plan_for(schema)
    feeds: Feeds = {}
    numeric = plan.numeric
    if numeric:
        block = None
        try:
            arr = np.array([columns[c] for c in numeric])
            if arr.dtype.kind in "iufb" and arr.shape == (len(numeric), n):
                with np.errstate(over="ignore", invalid="ignore"):
                    block = arr.astype(np.float32)
                if arr.dtype.kind == "f" and not np.isfinite(block).all():
                    block = None  # let the per-column path report the column and row
        except (ValueError, TypeError):
            block = None
        if block is None:
            for c in numeric:
                feeds[c] = numeric_column(c, columns[c], n)
        else:
            for j, c in enumerate(numeric):
                feeds[c] = block[j].reshape(n, 1)
    for c in plan.categorical:
        feeds[c] = categorical_column(c, columns[c], n)
    return feeds


def columns_from_records(records: Any, schema: FeatureSchema, max_rows: int, field: str):
    """``[{column: value}, ...]`` to ``({column: [values]}, n)``."""
    if not isinstance(records, list):
        raise RequestError(
            f"{field}: expected a list of objects (one per row), got {type(records).__name__}",
            field=field,
            reason="wrong_type",
        )
    n = len(records)
    check_rows(n, max_rows, field)
    plan = plan_for(schema)
    keys = plan.keys
    if not all(type(r) is dict and r.keys() == keys for r in records):
        for i, r in enumerate(records):
            if type(r) is not dict:
                raise RequestError(
                    f"{field}[{i}]: expected an object mapping column names to values, got "
                    f"{_describe(r)}",
                    field=f"{field}[{i}]",
                    reason="wrong_type",
                )
            if r.keys() != keys:
                check_names(list(r), schema, f"{field}[{i}]")
    return {name: [r[name] for r in records] for name in plan.names}, n


def columns_from_split(columns: Any, data: Any, schema: FeatureSchema, max_rows: int, field: str):
    """``columns: [...], data: [[...], ...]`` (row-major) to ``({column: values}, n)``."""
    prefix = f"{field}." if field else ""
    if not isinstance(columns, list) or not all(type(c) is str for c in columns):
        raise RequestError(
            f"{prefix}columns: expected a list of column names", field=f"{prefix}columns",
            reason="wrong_type",
        )
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise RequestError(
            f"{prefix}columns: duplicate column(s) {dupes}", field=f"{prefix}columns",
            reason="duplicate_column",
        )
    check_names(columns, schema, f"{prefix}columns")
    if not isinstance(data, list):
        raise RequestError(
            f"{prefix}data: expected a list of rows (lists of values)", field=f"{prefix}data",
            reason="wrong_type",
        )
    n = len(data)
    check_rows(n, max_rows, f"{prefix}data")
    width = len(columns)
    if not all(type(r) is list and len(r) == width for r in data):
        for i, r in enumerate(data):
            if type(r) is not list or len(r) != width:
                raise RequestError(
                    f"{prefix}data[{i}]: expected a list of {width} values in the order of "
                    f"{prefix}columns, got {_describe(r)}",
                    field=f"{prefix}data[{i}]",
                    reason="wrong_shape",
                )
    return dict(zip(columns, zip(*data, strict=True), strict=True)), n


def columns_from_columnar(inputs: Any, schema: FeatureSchema, max_rows: int, field: str):
    """``{column: [values]}`` to ``({column: values}, n)``."""
    check_names(list(inputs), schema, field)
    n = None
    for name in schema.feature_names:
        values = inputs[name]
        if not isinstance(values, list):
            raise RequestError(
                f"{field}.{name}: expected a list of values (one per row)",
                field=name,
                reason="wrong_type",
            )
        if n is None:
            n = len(values)
            check_rows(n, max_rows, field)
        elif len(values) != n:
            raise RequestError(
                f"{field}.{name}: {len(values)} values, but other columns have {n}",
                field=name,
                reason="wrong_shape",
            )
    return {name: inputs[name] for name in schema.feature_names}, n or 0
