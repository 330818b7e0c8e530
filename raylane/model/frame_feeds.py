"""The graph's inputs from a table's block, checked by column instead of by value.

:func:`raylane.model.feeds.feeds_from_columns` checks JSON values one by one (a request's rows
arrive as Python objects). A block read from Parquet arrives as typed columns: here each column
is checked with NumPy against the same rules (a missing value is null; a number must be finite
and fit float32; a column trained as an integer dtype takes only integers in that dtype's range;
a category is spelled as :func:`~raylane.model.schema.category_value` spells it, then as the
model recorded it). It gives the same feeds the JSON path gives for the same rows, or None when
any row might be refused or a column's dtype is one it does not cover: the caller then goes
through the JSON path, which names the refusal.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raylane.model.column_values import F32_MAX, integer_problem
from raylane.model.feeds import Feeds, plan_for
from raylane.model.schema import (
    MISSING_CATEGORY,
    FeatureSchema,
    arrow_string_categories,
    category_values,
)

# Python types a categorical value may have (after NumPy scalars become Python ones, as a
# client's JSON decodes), beside str: numbers are spelled, anything else is refused
_CATEGORY_NUMBERS = {int, float, bool}


def _numeric(series: pd.Series, bounds) -> np.ndarray | None:
    arr = series.to_numpy()
    kind = arr.dtype.kind
    if not isinstance(series.dtype, np.dtype) or kind not in "biuf":
        return None  # object, extension or other dtypes: value by value
    if kind == "f":
        present = arr[~np.isnan(arr)]
        with np.errstate(invalid="ignore"):
            if not (np.abs(present) <= F32_MAX).all():  # also false for +-inf
                return None
        if bounds is not None and integer_problem(present.astype(np.float64), bounds) is not None:
            return None
    elif bounds is not None and integer_problem(arr, bounds) is not None:
        return None
    return arr.astype(np.float32)


def _categorical(series: pd.Series, numeric_codes: bool, spellings: dict[str, str]
                 ) -> np.ndarray | None:
    from_arrow = arrow_string_categories(series, numeric_codes, spellings)
    if from_arrow is not None:  # Arrow holds only valid UTF-8 strings: nothing to check
        return from_arrow
    if isinstance(series.dtype, pd.StringDtype):  # pandas' string columns in Python objects
        arr = series.to_numpy(dtype=object, na_value=None)
    elif isinstance(series.dtype, np.dtype):
        arr = series.to_numpy()
    else:
        return None
    kind = arr.dtype.kind
    if kind == "f":
        if arr.dtype != np.float64:  # float32 spells its values otherwise as Python floats
            return None
        missing = np.isnan(arr)
        if np.isinf(arr).any():
            return None
    elif kind in "biu":
        missing = np.zeros(len(arr), dtype=bool)
    elif kind == "O":
        missing = pd.isna(arr)
        types = set(map(type, arr[~missing]))
        if not types <= {str} | _CATEGORY_NUMBERS:
            return None
        if float in types and not all(np.isfinite(v) for v in arr[~missing] if type(v) is float):
            return None
    else:
        return None
    values = np.full(len(arr), MISSING_CATEGORY, dtype=object)
    present = ~missing
    if present.any():
        values[present] = category_values(arr[present], numeric_codes)
    if spellings:  # every value, the missing category's too, as the JSON path does
        values = np.array([spellings.get(v, v) for v in values], dtype=object)
    try:
        "".join(values).encode("utf-8")
    except UnicodeEncodeError:
        return None  # a lone surrogate: the JSON path names it
    return values


def feeds_from_frame(frame: pd.DataFrame, schema: FeatureSchema) -> Feeds | None:
    """The graph's inputs for every row of ``frame`` (which holds every feature column), or
    None if a row might be refused or a column has a dtype checked only value by value."""
    plan = plan_for(schema)
    n = len(frame)
    feeds: Feeds = {}
    for c in plan.numeric:
        column = _numeric(frame[c], plan.bounds[c])
        if column is None:
            return None
        feeds[c] = column.reshape(n, 1)
    for c in plan.categorical:
        column = _categorical(frame[c], plan.numeric_codes[c], plan.aliases[c])
        if column is None:
            return None
        feeds[c] = column.reshape(n, 1)
    return feeds
