"""The table layouts requests carry, to ``({column: values}, rows)``: records (one object per
row), a split (column names + row-major data) and columnar (``{column: [values]}``).

Column names are checked here (the model's columns, each once, no more names than it has); the
values are checked per column when the columns become the graph's feeds
(:func:`raylane.model.feeds.feeds_from_columns`).
"""

from __future__ import annotations

from typing import Any, NoReturn

from raylane.model.column_values import describe
from raylane.model.feeds import RequestError, plan_for
from raylane.model.schema import FeatureSchema
from raylane.serving.limits import check_rows


def check_columns(
    columns: list[str], schema: FeatureSchema, field: str, names: bool = True
) -> None:
    """A list of column names (a split's ``columns``, a CSV header): no more names than the
    model has features, no name twice (found in one pass) and, if ``names``, exactly the
    model's columns."""
    width = len(schema.feature_names)
    if len(columns) > width:
        raise RequestError(
            f"{field}: {len(columns)} names, but the model has {width} columns "
            f"{schema.feature_names}",
            field=field,
            reason="too_many_columns",
        )
    seen: set[str] = set()
    dupes: set[str] = set()
    for c in columns:
        if c in seen:
            dupes.add(c)
        seen.add(c)
    if dupes:
        raise RequestError(
            f"{field}: duplicate column(s) {sorted(dupes)}", field=field,
            reason="duplicate_column",
        )
    if names:
        check_names(columns, schema, field)


def check_names(given: list[str] | Any, schema: FeatureSchema, field: str) -> None:
    """Exactly the model's columns: report missing and unknown ones by name."""
    expected = schema.feature_names
    names = set(given)
    known = set(expected)
    missing = [c for c in expected if c not in names]
    surplus = [c for c in names if c not in known]
    unknown = sorted(str(c) for c in surplus[:10])
    if len(surplus) > 10:
        unknown.append(f"... and {len(surplus) - 10} more")
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


def columns_from_records(records: Any, schema: FeatureSchema, max_rows: int, field: str):
    """``[{column: value}, ...]`` to ``({column: values}, n)``, each column's values in row
    order."""
    if not isinstance(records, list):
        raise RequestError(
            f"{field}: expected a list of objects (one per row), got {type(records).__name__}",
            field=field,
            reason="wrong_type",
        )
    n = len(records)
    check_rows(n, max_rows, field)
    plan = plan_for(schema)
    # Every record a dict with as many keys as the model has columns, each of them present
    # (the getter raises KeyError otherwise): exactly the model's columns. Checked and
    # transposed in C; a batch with any fault is walked row by row to name the row.
    if {dict} == set(map(type, records)) and {len(plan.names)} == set(map(len, records)):
        try:
            rows = list(map(plan.row_values, records))
        except KeyError:
            pass
        else:
            return dict(zip(plan.names, zip(*rows, strict=True), strict=True)), n
    _name_the_bad_row(records, schema, plan.keys, field)


def _name_the_bad_row(
    records: list, schema: FeatureSchema, keys: set[str], field: str
) -> NoReturn:
    """Raise for the first record that is not an object of exactly the model's columns."""
    for i, r in enumerate(records):
        if type(r) is not dict:
            raise RequestError(
                f"{field}[{i}]: expected an object mapping column names to values, got "
                f"{describe(r)}",
                field=f"{field}[{i}]",
                reason="wrong_type",
            )
        if r.keys() != keys:
            check_names(list(r), schema, f"{field}[{i}]")
    raise RequestError(  # not reached: a batch that failed the check above has a bad row
        f"{field}: expected objects mapping the model's columns to values", field=field,
        reason="wrong_type",
    )


def columns_from_split(columns: Any, data: Any, schema: FeatureSchema, max_rows: int, field: str):
    """``columns: [...], data: [[...], ...]`` (row-major) to ``({column: values}, n)``."""
    prefix = f"{field}." if field else ""
    if not isinstance(columns, list) or not all(type(c) is str for c in columns):
        raise RequestError(
            f"{prefix}columns: expected a list of column names", field=f"{prefix}columns",
            reason="wrong_type",
        )
    check_columns(columns, schema, f"{prefix}columns")
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
                    f"{prefix}columns, got {describe(r)}",
                    field=f"{prefix}data[{i}]",
                    reason="wrong_shape",
                )
    return dict(zip(columns, zip(*data, strict=True), strict=True)), n


def columns_from_columnar(inputs: Any, schema: FeatureSchema, max_rows: int, field: str):
    """``{column: [values]}`` to ``({column: values}, n)``."""
    width = len(schema.feature_names)
    if len(inputs) > width:
        raise RequestError(
            f"{field}: {len(inputs)} columns, but the model has {width} "
            f"{schema.feature_names}", field=field, reason="too_many_columns",
        )
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

