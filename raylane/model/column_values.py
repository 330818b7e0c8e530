"""One column's values checked and typed as the graph takes them: ``[N, 1]`` float32 for a
numeric column, ``[N, 1]`` strings for a categorical one.

On the hot path of every prediction, so it works on plain lists and numpy arrays (no pandas, no
pydantic). A value the column cannot hold is a :class:`RequestError` naming the column and row.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from raylane.model.schema import MISSING_CATEGORY, category_value

F32_MAX = float(np.finfo(np.float32).max)
_STR_ONLY = frozenset({str})


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



def describe(value: Any) -> str:
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
        f"{describe(value)} (row {i})",
        field=name,
        reason="out_of_range",
    )


def _not_integer(name: str, value: Any, i: int, bounds: Bounds) -> RequestError:
    return RequestError(
        f"column {name!r}: expected an integer (the column is {bounds[2]}) or null, got "
        f"{describe(value)} (row {i})",
        field=name,
        reason="wrong_type",
    )


def integer_problem(arr: np.ndarray, bounds: Bounds) -> tuple[int, bool] | None:
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
    problem = integer_problem(arr, bounds)
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
                    f"column {name!r}: expected a finite number or null, got {describe(values[i])}"
                    f" (row {i}; float32 range is +-{F32_MAX:.3g})",
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
                if abs(v) > F32_MAX:
                    raise RequestError(
                        f"column {name!r}: expected a finite number or null, got {describe(v)}"
                        f" (row {i}; float32 range is +-{F32_MAX:.3g})",
                        field=name,
                        reason="non_finite",
                    )
                out[i] = v
            elif t is float:
                if not math.isfinite(v) or abs(v) > F32_MAX:
                    raise RequestError(
                        f"column {name!r}: expected a finite number or null, got {describe(v)}"
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
                    f"column {name!r}: expected a number or null, got {kind} {describe(v)}"
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
    if numeric or not _STR_ONLY.issuperset(map(type, values)):
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
                    f"column {name!r}: expected {expected} or null, got {describe(v)} (row {i})",
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
                    f"UTF-8 (a lone surrogate) in {describe(v)} (row {i})",
                    field=name,
                    reason="invalid_string",
                ) from None
    return np.array(values, dtype=object).reshape(n, 1)
