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

from raylane.model.schema import MISSING_CATEGORY, FeatureSchema, category_value

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


Bounds = tuple[int, int, str]  # an integer column's (lowest, highest, dtype)


def integer_bounds(dtype: str) -> Bounds | None:
    """The range of a numeric column trained as an integer dtype (``int64``, ``Int32``, ...)."""
    try:
        info = np.iinfo(np.dtype(dtype.lower()))
    except (TypeError, ValueError):
        return None
    return int(info.min), int(info.max), info.dtype.name


def _out_of_range(name: str, value: Any, i: int, bounds: Bounds) -> RequestError:
    lo, hi, dtype = bounds
    return RequestError(
        f"column {name!r}: expected an integer in the {dtype} range [{lo}, {hi}] or null, got "
        f"{_describe(value)} (row {i})",
        field=name,
        reason="out_of_range",
    )


def _not_integer(name: str, value: Any, i: int, bounds: Bounds) -> RequestError:
    return RequestError(
        f"column {name!r}: expected an integer (the column is {bounds[2]}) or null, got "
        f"{_describe(value)} (row {i})",
        field=name,
        reason="wrong_type",
    )


def _integer_problem(arr: np.ndarray, bounds: Bounds) -> tuple[int, bool] | None:
    """First row of a 1-D numeric ``arr`` (finite) an integer column cannot hold, vectorized:
    ``(row, out_of_range)``, or None."""
    lo, hi, _ = bounds
    kind = arr.dtype.kind
    if kind == "b":
        return None
    if kind in "iu":
        info = np.iinfo(arr.dtype)
        if info.min >= lo and info.max <= hi:  # e.g. int64 values in an int64 column
            return None
        bad = np.zeros(arr.shape, dtype=bool)
        if info.min < lo:
            bad |= arr < lo
        if info.max > hi:
            bad |= arr > hi
        return (int(np.argmax(bad)), True) if bad.any() else None
    outside = (arr < lo) | (arr >= hi + 1)  # hi + 1 is a power of two: exact as a float
    fraction = np.floor(arr) != arr
    if not (outside.any() or fraction.any()):
        return None
    i = int(np.argmax(outside | fraction))
    return i, bool(outside[i])


def _check_integers(name: str, arr: np.ndarray, values: Any, bounds: Bounds) -> None:
    problem = _integer_problem(arr, bounds)
    if problem is not None:
        i, outside = problem
        raise (_out_of_range if outside else _not_integer)(name, values[i], i, bounds)


def numeric_column(name: str, values: Any, n: int, bounds: Bounds | None = None) -> np.ndarray:
    """A ``[N, 1]`` float32 column; ``null`` is a missing value, strings and NaN are errors.

    Numbers float32 cannot hold are errors, and so are, for a column trained as an integer
    dtype (``bounds``), fractions and numbers outside that dtype's range.
    """
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
        if bounds is not None:
            _check_integers(name, arr, values, bounds)
    else:
        out = np.empty(n, dtype=np.float32)
        for i, v in enumerate(values):
            t = type(v)
            if v is None:
                out[i] = np.nan
            elif t is bool:
                out[i] = v
            elif t is int:  # exact: a Python int can be any size
                if bounds is not None and not bounds[0] <= v <= bounds[1]:
                    raise _out_of_range(name, v, i, bounds)
                if abs(v) > _F32_MAX:
                    raise RequestError(
                        f"column {name!r}: expected a finite number or null, got {_describe(v)}"
                        f" (row {i}; float32 range is +-{_F32_MAX:.3g})",
                        field=name,
                        reason="non_finite",
                    )
                out[i] = v
            elif t is float:
                if not math.isfinite(v) or abs(v) > _F32_MAX:
                    raise RequestError(
                        f"column {name!r}: expected a finite number or null, got {_describe(v)}"
                        f" (row {i})",
                        field=name,
                        reason="non_finite",
                    )
                if bounds is not None:
                    if not bounds[0] <= v < bounds[1] + 1:
                        raise _out_of_range(name, v, i, bounds)
                    if not v.is_integer():
                        raise _not_integer(name, v, i, bounds)
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


def categorical_column(
    name: str, values: Any, n: int, numeric: bool = False, aliases: dict[str, str] | None = None
) -> np.ndarray:
    """A ``[N, 1]`` string column; ``null`` is the missing category; numbers are accepted.

    Values are spelled as training spelled them (:func:`~raylane.model.schema.category_value`; a
    column of ``numeric`` codes reads ``1``, ``1.0``, ``"1"`` and ``"1.0"`` alike), then as the
    model recorded them (``aliases``: canonical -> recorded, for models trained before that
    spelling). Strings that cannot be encoded as UTF-8 (lone surrogates) are errors here: ONNX
    Runtime would fail on them, and with them on every request batched alongside.
    """
    values = list(values)
    if len(values) != n:
        raise RequestError(
            f"column {name!r}: expected {n} values (one per row), got {len(values)}",
            field=name,
            reason="wrong_shape",
        )
    if numeric or not all(type(v) is str for v in values):
        fixed = []
        for i, v in enumerate(values):
            t = type(v)
            if v is None:
                fixed.append(MISSING_CATEGORY)
            elif t is str or t is int or t is bool or (t is float and math.isfinite(v)):
                fixed.append(category_value(v, numeric))
            else:
                expected = "a finite number" if t is float else "a string (a category)"
                raise RequestError(
                    f"column {name!r}: expected {expected} or null, got {_describe(v)} (row {i})",
                    field=name,
                    reason="non_finite" if t is float else "wrong_type",
                )
        values = fixed
    if aliases:
        values = [aliases.get(v, v) for v in values]
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        for i, v in enumerate(values):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise RequestError(
                    f"column {name!r}: {exc.object[exc.start:exc.end]!r} cannot be encoded as "
                    f"UTF-8 (a lone surrogate) in {_describe(v)} (row {i})",
                    field=name,
                    reason="invalid_string",
                ) from None
    return np.array(values, dtype=object).reshape(n, 1)


class _Plan:
    """Column names and rules of a schema, computed once (schema properties rebuild lists)."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        self.names = schema.feature_names
        self.keys = set(self.names)
        self.numeric = schema.numeric
        self.categorical = schema.categorical
        self.bounds = {c.name: integer_bounds(c.dtype) for c in schema.columns
                       if c.kind == "numeric"}
        self.integers = [(j, c, b) for j, (c, b) in enumerate(self.bounds.items())
                         if b is not None]
        # the integer columns' rows of the numeric block and their bounds (as [k, 1] floats;
        # hi + 1 is a power of two, exact as a float), for one vectorized check
        self.int_rows = np.array([j for j, _, _ in self.integers], dtype=np.intp)
        self.int_lo = np.array([[float(b[0])] for _, _, b in self.integers]).reshape(-1, 1)
        self.int_hi1 = np.array([[float(b[1] + 1)] for _, _, b in self.integers]).reshape(-1, 1)
        self.int64_only = all(b[2] == "int64" for _, _, b in self.integers)
        self.numeric_codes = {c.name: c.numeric_codes for c in schema.columns}
        self.aliases = {c.name: c.recorded_spellings() for c in schema.columns
                        if c.kind == "categorical"}


_PLANS: dict[int, _Plan] = {}


def plan_for(schema: FeatureSchema) -> _Plan:
    plan = _PLANS.get(id(schema))
    if plan is None or plan.schema is not schema:
        if len(_PLANS) > 64:
            _PLANS.clear()
        plan = _PLANS[id(schema)] = _Plan(schema)
    return plan


def _block_integers_ok(arr: np.ndarray, plan: _Plan) -> bool:
    """Whether the integer columns' rows of the numeric block (finite) hold only integers in
    their dtypes' ranges: one vectorized check for all of them."""
    kind = arr.dtype.kind
    if kind == "b" or (arr.dtype == np.int64 and plan.int64_only):
        return True
    if kind in "iu":
        return not any(_integer_problem(arr[j], b) for j, _, b in plan.integers)
    sub = arr[plan.int_rows]
    return bool(((sub >= plan.int_lo) & (sub < plan.int_hi1) & (np.floor(sub) == sub)).all())


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
                elif plan.integers and not _block_integers_ok(arr, plan):
                    block = None  # the per-column path names the column and row
        except (ValueError, TypeError):
            block = None
        if block is None:
            for c in numeric:
                feeds[c] = numeric_column(c, columns[c], n, plan.bounds[c])
        else:
            for j, c in enumerate(numeric):
                feeds[c] = block[j].reshape(n, 1)
    for c in plan.categorical:
        feeds[c] = categorical_column(c, columns[c], n, plan.numeric_codes[c], plan.aliases[c])
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
