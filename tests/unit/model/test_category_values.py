"""category_values spells a column exactly as category_value spells each of its values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raylane.model.schema import category_value, category_values

COLUMNS = {
    "strings": pd.Series(["a", "b", "a", "", "c"] * 3),
    "numeric strings": pd.Series(["1", "1.0", "01", "2.50", "x", "1e3"]),
    "ints": pd.Series([3, 1, 3, 2, 1]),
    "floats with nan": pd.Series([1.0, 2.5, np.nan, 1.0, -0.0, 0.0, np.inf]),
    "float32": pd.Series(np.array([0.1, 0.5, 0.1], dtype=np.float32)),
    "bools": pd.Series([True, False, True]),
    "nullable ints": pd.Series([1, None, 3], dtype="Int64").dropna(),
    "category dtype": pd.Series(["x", "y", "x"], dtype="category"),
    "ints beside bools": pd.Series([1, True, 0, False, 1.0], dtype=object),
    "numbers beside strings": pd.Series([1, "1", 2.0, "b"], dtype=object),
    "empty": pd.Series([], dtype=object),
}


@pytest.mark.parametrize("name", list(COLUMNS))
@pytest.mark.parametrize("numeric", [False, True])
def test_each_value_spelled_as_category_value_spells_it(name: str, numeric: bool) -> None:
    series = COLUMNS[name]
    for values in (series, series.astype(object)):
        expected = [category_value(v, numeric) for v in values]
        got = category_values(values, numeric)
        assert got.dtype == object
        assert list(got) == expected


def test_ints_beside_equal_bools_keep_their_own_spelling() -> None:
    got = category_values(pd.Series([1, True, 0, False], dtype=object))
    assert list(got) == ["1", "True", "0", "False"]


WITH_MISSING = {
    "strings with None and nan": pd.Series(["a", None, "b", np.nan, "a", ""], dtype=object),
    "float codes with nan": pd.Series([1.0, np.nan, 2.0, 1.0]),
    "nullable ints with NA": pd.Series([1, None, 3, 1], dtype="Int64"),
    "category dtype with nan": pd.Series(["x", None, "y"], dtype="category"),
    "all missing": pd.Series([None, np.nan], dtype=object),
    # pandas' str dtype, held in Arrow: how a block read from Parquet or CSV arrives
    "Arrow strings with nulls": pd.Series(["a", None, "b", "1.0", "a", "", "1", "x"], dtype="str"),
    "Arrow strings, all missing": pd.Series([None, None], dtype="str"),
    "Arrow strings, no rows": pd.Series([], dtype="str"),
}


@pytest.mark.parametrize("name", list(WITH_MISSING))
@pytest.mark.parametrize("dtype", ["object", "float64"])
def test_the_graph_feeds_spell_a_column_value_by_value(name: str, dtype: str) -> None:
    """OnnxModel's categorical feeds: each present value as category_value spells it, missing
    ones as the missing category, recorded spellings of older models kept."""
    from raylane.model.onnx_model import OnnxModel
    from raylane.model.schema import MISSING_CATEGORY, ColumnSpec

    series = WITH_MISSING[name]
    col = ColumnSpec(name="c", kind="categorical", dtype=dtype, categories=["1.0", "a", "x"])
    spell = col.recorded_spellings() or {}
    expected = [MISSING_CATEGORY if v is None or (not isinstance(v, str) and pd.isna(v))
                else spell.get(category_value(v, col.numeric_codes),
                               category_value(v, col.numeric_codes)) for v in series]
    assert list(OnnxModel._categories(series, col)) == expected
