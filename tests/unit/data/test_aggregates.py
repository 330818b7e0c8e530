"""The block-by-block summaries and medians a large table's schema and preprocessing come from:
merged over any split of the rows they equal what one pass over the whole table gives."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from raylane.data.aggregates import (
    BINS,
    MEDIAN_PASSES,
    CategoryStats,
    Summary,
    medians_local,
    merge_by_split,
    summarize,
    summarize_by_split,
)


def _blocks(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    return [frame.iloc[i::n] for i in range(n)]


def _frame(rows: int = 5000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(3, 1, rows)
    x[rng.random(rows) < 0.1] = np.nan
    return pd.DataFrame({
        "x": x,
        "n": rng.integers(0, 500, rows).astype(np.float64),
        "c": rng.choice(["a", "b", "", "d"], rows),
        "__split": rng.integers(0, 3, rows).astype(np.int8),
    })


def test_merged_block_summaries_equal_the_whole_tables():
    frame = _frame()
    merged = Summary()
    for block in _blocks(frame, 7):
        merged = merged.merge(summarize(block, ["x", "n"], ["c"], cap=10))
    whole = summarize(frame, ["x", "n"], ["c"], cap=10)
    assert merged.rows == whole.rows == len(frame)
    x = frame["x"].dropna()
    stats = merged.numeric["x"]
    assert (stats.count, stats.missing) == (len(x), frame["x"].isna().sum())
    assert (stats.low, stats.high) == (x.min(), x.max())
    assert stats.mean == pytest.approx(x.mean(), rel=1e-12)
    assert merged.categorical["c"].counts == frame["c"].value_counts().to_dict()
    assert merged.categorical["c"].missing == (frame["c"] == "").sum()


def test_categories_past_the_cap_overflow_in_a_block_or_when_merged():
    one = summarize(pd.DataFrame({"c": ["a", "b", "c"]}), [], ["c"], cap=2)
    assert one.categorical["c"].overflowed
    a = CategoryStats(2, {"a": 1, "b": 1})
    assert a.merge(CategoryStats(2, {"a": 3})).counts == {"a": 4, "b": 1}
    assert a.merge(CategoryStats(2, {"c": 1})).overflowed
    assert a.merge(CategoryStats(2, None)).overflowed


def test_summaries_by_split_merge_per_split():
    frame = _frame()
    merged: dict = {}
    for block in _blocks(frame, 5):
        merged = merge_by_split(merged, summarize_by_split(block, ["x"], ["c"], cap=10))
    for code in (0, 1, 2):
        part = frame[frame["__split"] == code]
        assert merged[code].rows == len(part)
        assert merged[code].numeric["x"].count == part["x"].notna().sum()


@pytest.mark.parametrize("rows", [1, 2, 5000, 5001])
def test_medians_are_exact_for_integers_and_within_the_bound_for_floats(rows):
    frame = _frame(rows, seed=rows)
    stats = summarize(frame, ["x", "n"], [], cap=10).numeric
    got = medians_local(frame, stats)
    assert got["n"] == np.median(frame["n"])  # integers: a bin of one value, exact
    x = frame["x"].dropna()
    if len(x):
        bound = (x.max() - x.min()) / BINS**MEDIAN_PASSES / 2
        assert abs(got["x"] - np.median(x)) <= bound + 1e-12
    else:
        assert math.isnan(got["x"])


def test_medians_of_heavy_ties_and_a_constant_column():
    values = np.r_[np.zeros(1000), np.ones(999), 1e9]
    frame = pd.DataFrame({"t": values, "k": np.full(values.size, 3.25)})
    stats = summarize(frame, ["t", "k"], [], cap=10).numeric
    got = medians_local(frame, stats)
    assert got == {"t": 0.5, "k": 3.25}
