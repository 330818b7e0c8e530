"""The by-column check of a block gives the feeds the service's value-by-value path gives for the
same rows, and gives up (None) on every block that path would refuse."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raylane.model.feeds import RequestError, feeds_from_columns
from raylane.model.frame_feeds import feeds_from_frame
from raylane.model.schema import ColumnSpec, FeatureSchema

SCHEMA = FeatureSchema(
    task="classification", target="y", class_labels=["no", "yes"],
    columns=[
        ColumnSpec(name="amount", kind="numeric", dtype="float64"),
        ColumnSpec(name="age", kind="numeric", dtype="int64"),
        ColumnSpec(name="small", kind="numeric", dtype="int8"),
        ColumnSpec(name="home", kind="categorical", dtype="object", categories=["own", "rent"]),
        ColumnSpec(name="code", kind="categorical", dtype="float64", categories=["1", "2.5"]),
        # a model that recorded its codes as "1.0" (trained before codes were spelled once)
        ColumnSpec(name="legacy", kind="categorical", dtype="int64", categories=["1.0", "2.0"]),
    ],
)


def json_values(series: pd.Series) -> list:
    """A column as a client's JSON decodes it: NaN as null, NumPy scalars as Python ones."""
    values = series.astype(object).where(series.notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def value_by_value(frame: pd.DataFrame):
    columns = {c: json_values(frame[c]) for c in SCHEMA.feature_names}
    return feeds_from_columns(columns, SCHEMA, len(frame))


def assert_same_as_value_by_value(frame: pd.DataFrame) -> bool:
    """Both paths agree; True if the block was accepted."""
    fast = feeds_from_frame(frame, SCHEMA)
    try:
        slow = value_by_value(frame)
    except RequestError:
        assert fast is None, "the by-column check accepted a block the service refuses"
        return False
    if fast is None:  # allowed (it gives up on dtypes it does not cover), but not here
        pytest.fail(f"the by-column check gave up on a block the service accepts:\n{frame}")
    assert fast.keys() == slow.keys()
    for name in slow:
        assert fast[name].shape == slow[name].shape and fast[name].dtype == slow[name].dtype
        if fast[name].dtype == np.float32:
            np.testing.assert_array_equal(fast[name], slow[name], err_msg=name)
        else:
            assert fast[name].tolist() == slow[name].tolist(), name
    return True


def good_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    amount = rng.normal(1000, 300, n)
    amount[rng.random(n) < 0.2] = np.nan
    code = rng.choice([1.0, 2.5, 3.0], n)
    code[rng.random(n) < 0.2] = np.nan
    home = rng.choice(np.array(["own", "rent", "other"], dtype=object), n)
    home[rng.random(n) < 0.2] = None
    return pd.DataFrame({
        "amount": amount,
        "age": rng.integers(18, 90, n),
        "small": rng.integers(-128, 128, n).astype(np.int16),
        "home": home,
        "code": code,
        "legacy": rng.choice([1, 2, 3], n),
    })


@pytest.mark.parametrize("seed", range(5))
def test_good_blocks_give_the_same_feeds(seed):
    assert assert_same_as_value_by_value(good_frame(np.random.default_rng(seed), 500))


def test_an_integer_column_read_as_floats_with_missing_values_is_accepted():
    frame = good_frame(np.random.default_rng(0), 50)
    frame["age"] = frame["age"].astype(np.float64)
    frame.loc[3, "age"] = np.nan
    assert assert_same_as_value_by_value(frame)


def test_codes_and_categories_given_as_mixed_python_values():
    frame = good_frame(np.random.default_rng(1), 6)
    frame["home"] = pd.Series(["own", 7, 2.5, True, None, float("nan")], dtype=object)
    frame["code"] = pd.Series(["1.0", 1, "2.50", None, 3, "x"], dtype=object)
    assert assert_same_as_value_by_value(frame)


def test_string_columns_held_in_arrow_give_the_same_feeds():
    """As a block read from Parquet or CSV arrives: categories as pandas' Arrow-backed strings,
    numeric codes and a legacy model's codes spelled as text among them."""
    rng = np.random.default_rng(4)
    frame = good_frame(rng, 300)
    frame["home"] = pd.Series(frame["home"].tolist(), dtype="str")
    code = rng.choice(np.array(["1.0", "2.50", "3", "1", None], dtype=object), 300)
    frame["code"] = pd.Series(code.tolist(), dtype="str")
    frame["legacy"] = pd.Series(rng.choice(["1", "2", "3"], 300).tolist(), dtype="str")
    assert all(frame[c].dtype == "str" and frame[c].dtype.storage == "pyarrow"
               for c in ("home", "code", "legacy"))
    assert assert_same_as_value_by_value(frame)


BAD = {
    "an infinite amount": ("amount", np.inf),
    "an amount float32 cannot hold": ("amount", 1e39),
    "a fraction in an integer column": ("age", 30.5),
    "an int8 column's value out of range": ("small", 200),
    "a string in a numeric column": ("amount", "a lot"),
    "an infinite category": ("code", np.inf),
    "a category that is neither a string nor a number": ("home", b"own"),
    "a lone surrogate": ("home", "\ud800"),
}


@pytest.mark.parametrize("column, value", BAD.values(), ids=BAD.keys())
def test_a_block_with_one_refused_row_is_left_to_the_service_path(column, value):
    frame = good_frame(np.random.default_rng(2), 20)
    if isinstance(value, (str, bytes)) or column == "small":
        frame[column] = frame[column].astype(object)
    elif column == "age":
        frame[column] = frame[column].astype(np.float64)
    frame.loc[7, column] = value
    assert not assert_same_as_value_by_value(frame)


def test_extension_dtypes_are_left_to_the_service_path():
    frame = good_frame(np.random.default_rng(3), 20)
    frame["age"] = frame["age"].astype("Int64")
    assert feeds_from_frame(frame, SCHEMA) is None
    assert value_by_value(frame)["age"].dtype == np.float32
