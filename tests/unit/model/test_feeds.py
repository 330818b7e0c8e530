"""A request's numeric columns checked as one block, nulls included: the same feeds as checking
each column on its own, and every value the per-column check refuses still refused, naming the
column and row."""

from __future__ import annotations

import numpy as np
import pytest

from raylane.model.column_values import integer_bounds, numeric_column
from raylane.model.feeds import RequestError, feeds_from_columns
from raylane.model.schema import ColumnSpec, FeatureSchema

SCHEMA = FeatureSchema(
    task="classification", target="y", class_labels=["no", "yes"],
    columns=[
        ColumnSpec(name="age", kind="numeric", dtype="int64"),
        ColumnSpec(name="small", kind="numeric", dtype="int8"),
        ColumnSpec(name="income", kind="numeric", dtype="float64"),
        ColumnSpec(name="home", kind="categorical", dtype="object", categories=["own", "rent"]),
    ],
)
NUMERIC = [c.name for c in SCHEMA.columns if c.kind == "numeric"]


def one_column_at_a_time(columns: dict, n: int) -> dict:
    return {c.name: numeric_column(c.name, columns[c.name], n, integer_bounds(c.dtype))
            for c in SCHEMA.columns if c.kind == "numeric"}


def request(rng: np.random.Generator, n: int) -> dict:
    def with_nulls(values: list) -> list:
        return [None if rng.random() < 0.3 else v for v in values]

    return {
        "age": with_nulls([int(v) for v in rng.integers(18, 90, n)]),
        "small": with_nulls([int(v) for v in rng.integers(-128, 128, n)]),
        "income": with_nulls([float(v) for v in rng.normal(1000, 300, n)]),
        "home": with_nulls(["own", "rent"] * (n // 2) + ["own"] * (n % 2)),
    }


@pytest.mark.parametrize("n", [1, 2, 7, 500])
def test_a_block_with_nulls_gives_the_per_column_feeds(n):
    for seed in range(5):
        columns = request(np.random.default_rng(seed), n)
        feeds = feeds_from_columns(columns, SCHEMA, n)
        for name, expected in one_column_at_a_time(columns, n).items():
            assert feeds[name].dtype == np.float32 and feeds[name].shape == (n, 1)
            np.testing.assert_array_equal(feeds[name], expected, err_msg=name)


def test_columns_as_tuples_with_nulls_are_checked_as_one_block(monkeypatch):
    """Records and splits arrive transposed into tuples: they take the block, not the per-column
    path, and give the same feeds."""
    columns = request(np.random.default_rng(0), 50)
    expected = one_column_at_a_time(columns, 50)
    monkeypatch.setattr("raylane.model.feeds.numeric_column", None)  # the per-column path
    feeds = feeds_from_columns({c: tuple(v) for c, v in columns.items()}, SCHEMA, 50)
    for name, column in expected.items():
        np.testing.assert_array_equal(feeds[name], column, err_msg=name)


def test_booleans_and_integral_floats_count_as_numbers_beside_nulls():
    columns = {"age": [True, None, 30.0], "small": [None, 5, -1.0], "income": [1, None, 2.5],
               "home": ["own", None, "rent"]}
    feeds = feeds_from_columns(columns, SCHEMA, 3)
    np.testing.assert_array_equal(feeds["age"].ravel(), [1.0, np.nan, 30.0])
    np.testing.assert_array_equal(feeds["small"].ravel(), [np.nan, 5.0, -1.0])


REFUSED = {
    "a NaN sent as a number": ("income", float("nan"), "non_finite"),
    "an infinity": ("income", float("inf"), "non_finite"),
    "past float32": ("income", 1e39, "non_finite"),
    "a numeric string": ("age", "42", "wrong_type"),
    "a fraction in an integer column": ("age", 30.5, "wrong_type"),
    "out of int8": ("small", 128, "out_of_range"),
    "an int past int64": ("age", 2**63, "out_of_range"),
    "an int past float64": ("income", 10**400, "non_finite"),
    "a list": ("income", [1.0], "wrong_type"),
}


@pytest.mark.parametrize("column, value, reason", REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_value_beside_nulls_is_refused_by_column_and_row(column, value, reason):
    columns = request(np.random.default_rng(0), 6)
    columns["income"][0] = None  # nulls elsewhere: the block goes through the null-aware path
    columns[column][4] = value
    with pytest.raises(RequestError) as err:
        feeds_from_columns(columns, SCHEMA, 6)
    assert err.value.field == column and err.value.reason == reason
    assert "(row 4" in err.value.message
