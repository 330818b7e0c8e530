"""Records to columns (raylane/serving/layouts.py): each column's values in row order, the same
objects the rows held, and a row that is not an object or has other keys named by its index."""

from __future__ import annotations

import pytest

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
        assert type(columns[name]) is list
        assert columns[name] == [r[name] for r in records]
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
