"""The row -> graph contract that export and serving share: ``{column: values}`` to the ONNX
graph's inputs (one ``[N, 1]`` tensor per column), with every value checked as the column was
trained (:mod:`raylane.model.column_values`).

Export feeds its parity rows through :func:`feeds_from_columns`, so the graph is checked on the
very inputs a served request produces.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import numpy as np

from raylane.model.column_values import (
    RequestError,
    categorical_column,
    integer_bounds,
    integer_problem,
    numeric_column,
)
from raylane.model.schema import FeatureSchema

__all__ = ["Feeds", "RequestError", "feeds_from_columns", "plan_for"]

Feeds = dict[str, np.ndarray]


class _Plan:
    """Column names and rules of a schema, computed once (schema properties rebuild lists)."""

    def __init__(self, schema: FeatureSchema):
        self.schema = schema
        self.names = schema.feature_names
        self.keys = set(self.names)
        # a record's values in column order, as one tuple (itemgetter of one name is no tuple)
        self.row_values = itemgetter(*self.names) if len(self.names) > 1 else (
            lambda record, _name=self.names[0]: (record[_name],))
        self.kinds = {c.name: c.kind for c in schema.columns}
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
        return not any(integer_problem(arr[j], b) for j, _, b in plan.integers)
    sub = arr[plan.int_rows]
    with np.errstate(invalid="ignore"):  # NaN (a null) compares false: allowed below
        ok = (sub >= plan.int_lo) & (sub < plan.int_hi1) & (np.floor(sub) == sub)
    return bool((ok | np.isnan(sub)).all())


_NUMBER_OR_NULL = frozenset({int, float, bool, type(None)})


def _block_with_nulls(columns: dict[str, Any], numeric: list[str], n: int) -> np.ndarray | None:
    """The numeric columns as one float64 block, null as NaN, when every value is a number or
    null; None otherwise (a string, a NaN that was sent as a number, a ragged column...)."""
    for c in numeric:
        values = columns[c]
        if type(values) not in (list, tuple) or len(values) != n:
            return None
        if not _NUMBER_OR_NULL.issuperset(map(type, values)):  # the types, in C: no loop here
            return None
    try:
        arr = np.array([columns[c] for c in numeric], dtype=np.float64)
    except (OverflowError, ValueError, TypeError):  # an int past float64: checked exactly
        return None
    nan = np.isnan(arr)
    if nan.any():
        for j, i in zip(*np.nonzero(nan), strict=True):
            if columns[numeric[j]][i] is not None:
                return None  # a float NaN, not a null: the per-column path refuses it
    return arr


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
            nulls = arr.dtype == object  # nulls among the numbers (or worse: checked here)
            if nulls:
                arr = _block_with_nulls(columns, numeric, n)
            if arr is not None and arr.dtype.kind in "iufb" and arr.shape == (len(numeric), n):
                with np.errstate(over="ignore", invalid="ignore"):
                    block = arr.astype(np.float32)
                # NaN is a null where _block_with_nulls made it, else a number sent as NaN
                if arr.dtype.kind == "f" and (
                        np.isinf(block).any() if nulls else not np.isfinite(block).all()):
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

