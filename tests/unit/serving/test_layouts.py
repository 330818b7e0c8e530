"""Records to columns (raylane/serving/layouts.py): each column's values in row order, the same
objects the rows held, and a row that is not an object or has other keys named by its index."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylane.model.feeds import RequestError
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.serving.layouts import columns_from_records


def schema(*names: str) -> FeatureSchema:
    return FeatureSchema(task="regression", target="y", columns=[
        ColumnSpec(name=n, kind="numeric", dtype="float64") for n in names])


@pytest.mark.parametrize("names", [("a", "b", "c"), ("only",)])
@pytest.mark.parametrize("n", [1, 7])
def test_each_column_holds_its_rows_values_in_order(names, n):
    records = [{name: (i, name) if name != "b" else None for name in reversed(names)}
               for i in range(n)]
    columns, rows = columns_from_records(records, schema(*names), 1000, "records")
    assert rows == n and list(columns) == list(names)
    for name in names:
        assert type(columns[name]) in (list, tuple) and len(columns[name]) == n
        assert list(columns[name]) == [r[name] for r in records]
        assert all(v is r[name] for v, r in zip(columns[name], records, strict=True))


@pytest.mark.parametrize("bad, field, reason", [
    ([{"a": 1, "b": 2}, [1, 2]], "records[1]", "wrong_type"),
    ([{"a": 1, "b": 2}, {"a": 1}], "b", "missing_column"),
    ([{"a": 1, "b": 2}, {"a": 1, "b": 2, "c": 3}], "c", "unknown_column"),
])
def test_a_bad_row_is_named_by_its_index(bad, field, reason):
    with pytest.raises(RequestError) as caught:
        columns_from_records(bad, schema("a", "b"), 1000, "records")
    error = caught.value
    assert error.message.startswith("records[1]: ")
    assert (error.field, error.reason) == (field, reason)


def _row_by_row(records: list, names: tuple[str, ...]) -> dict | tuple[str, str]:
    """What the records must give: the columns, or the (field, reason) of the first bad row."""
    for i, r in enumerate(records):
        if type(r) is not dict:
            return f"records[{i}]", "wrong_type"
        missing = [c for c in names if c not in r]
        if missing:
            return missing[0], "missing_column"
        unknown = sorted(str(c) for c in r if c not in names)
        if unknown:
            return unknown[0], "unknown_column"
    return {c: [r[c] for r in records] for c in names}


_NAMES = ("a", "b", "c")
_RECORD = st.dictionaries(st.sampled_from((*_NAMES, "d", "A", "")), st.integers(), max_size=5)
_RECORDS = st.lists(st.one_of(_RECORD, _RECORD, _RECORD, st.lists(st.integers(), max_size=3),
                              st.none(), st.text(max_size=3)), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(records=_RECORDS)
def test_records_checked_in_one_go_agree_with_the_row_by_row_rule(records):
    """Records are checked and transposed in C when they are all right; any other batch gets the
    answer of the row-by-row rule: the first bad row's fault."""
    expected = _row_by_row(records, _NAMES)
    try:
        columns, n = columns_from_records(records, schema(*_NAMES), 1000, "records")
    except RequestError as error:
        assert (error.field, error.reason) == expected
    else:
        assert n == len(records)
        assert {c: list(v) for c, v in columns.items()} == expected
