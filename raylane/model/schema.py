"""The feature schema: what a model was trained on and what its ONNX graph takes.

It travels with every registered model (in the MLflow ``MLmodel`` metadata), so serving knows the
columns, their kinds, the class labels and the task without importing any training code.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import pandas as pd

Task = Literal["classification", "regression"]
ColumnKind = Literal["numeric", "categorical"]

# Categorical values are strings inside the graph; a missing category is the empty string.
MISSING_CATEGORY = ""
MAX_RECORDED_CATEGORIES = 200
_NUMERIC_DTYPE = re.compile(r"^(u?int|float)\d*$", re.IGNORECASE)  # int64, Int64, UInt8, float32
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def numeric_codes(dtype: str) -> bool:
    """Whether a categorical column of pandas dtype ``dtype`` holds numbers (integer codes)."""
    return bool(_NUMERIC_DTYPE.match(dtype))


def category_value(value: object, numeric: bool = False) -> str:
    """The one spelling of a (present) category value, used by training and by serving alike.

    A number is written as an integer when it is one (``1``, ``1.0``, ``np.float64(1.0)`` ->
    ``"1"``), else as its shortest repr; in a column of ``numeric`` codes a string that is a
    number is spelled the same way (``"1.0"`` -> ``"1"``), so a float column with missing values
    (stored as 1.0) matches a client's ``1`` or ``"1"``. Other strings are kept as they are;
    booleans are ``"True"``/``"False"``; NaN and infinities are ``str(value)``.
    """
    if isinstance(value, str):
        if numeric and len(value) <= 40 and _NUMBER.match(value):
            if _INTEGER.match(value):
                return str(int(value))
            number = float(value)
            return _number(number) if np.isfinite(number) else value
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _number(value) if np.isfinite(value) else str(value)
    return str(value)


# Kinds whose values compare equal only when category_value spells them alike, so each distinct
# value can be spelled once (pandas.api.types.infer_dtype's names).
_ONE_KIND = frozenset({"string", "integer", "floating", "boolean"})


def category_values(values, numeric: bool = False) -> np.ndarray:
    """:func:`category_value` of every element (an object array), spelling each distinct value
    once where the values are all of one kind; mixed values (``1`` beside ``True``, equal but
    spelled differently) are spelled one by one."""
    import pandas as pd

    raw = np.asarray(values)
    if raw.dtype.kind in "biu" or raw.dtype == np.float64:
        # one NumPy dtype whose scalars category_value spells as it spells the Python ones
        codes, uniques = pd.factorize(raw, use_na_sentinel=False)
        return np.array([category_value(v, numeric) for v in uniques], dtype=object)[codes]
    array = raw if raw.dtype == object else np.asarray(values, dtype=object)
    if len(array) == 0:
        return array
    kind = pd.api.types.infer_dtype(array, skipna=False)
    if kind == "string" and not numeric:
        return array  # a string is its own spelling
    if kind in _ONE_KIND:
        codes, uniques = pd.factorize(array, use_na_sentinel=False)
        spelled = np.array([category_value(v, numeric) for v in uniques], dtype=object)
        return spelled[codes]
    return np.array([category_value(v, numeric) for v in array], dtype=object)


def arrow_string_categories(series: pd.Series, numeric: bool = False,
                            spellings: dict[str, str] | None = None) -> np.ndarray | None:
    """A pandas string column held in Arrow (pandas' ``str`` dtype) as the graph's strings:
    each distinct value spelled once (:func:`category_values`, then as the model recorded it in
    ``spellings``), a missing value as :data:`MISSING_CATEGORY`; None for any other column.

    Only the distinct values become Python strings: the rows share them, so a block of many
    rows and few categories costs a dictionary encode and one take (the Python strings of every
    row were most of the time of turning a block into feeds)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    if not (isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow"):
        return None
    array = pa.array(series.array)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    encoded = pc.dictionary_encode(array)  # a missing value's index is null
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
    lookup = np.empty(len(distinct) + 1, dtype=object)
    lookup[:-1] = category_values(distinct, numeric)
    lookup[-1] = MISSING_CATEGORY
    if spellings:
        lookup = np.array([spellings.get(v, v) for v in lookup], dtype=object)
    return lookup[encoded.indices.fill_null(len(distinct)).to_numpy()]


def _number(value: float | np.floating) -> str:
    if float(value).is_integer():
        return str(int(value))
    return str(value)  # shortest repr of its own precision: np.float32(0.1) -> "0.1"


class ColumnSpec(BaseModel):
    """One raw input column of the model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: ColumnKind
    dtype: str  # the pandas dtype the column was read with, for people reading the schema
    nullable: bool = True
    categories: list[str] | None = None  # categories seen in training (categorical only)

    @property
    def numeric_codes(self) -> bool:
        """A categorical column whose training values were numbers (integer codes)."""
        return numeric_codes(self.dtype)

    def recorded_spellings(self) -> dict[str, str] | None:
        """Canonical -> recorded spelling of the categories this model recorded otherwise
        (models trained before :func:`category_value` recorded 1.0 as ``"1.0"``), or None."""
        out = {}
        for recorded in self.categories or []:
            canonical = category_value(recorded, self.numeric_codes)
            if canonical != recorded:
                out[canonical] = recorded
        return out or None

    @property
    def onnx_type(self) -> str:
        """The ONNX element type of this column's graph input."""
        return "float" if self.kind == "numeric" else "string"


class FeatureSchema(BaseModel):
    """Columns, task and labels of a trained model."""

    model_config = ConfigDict(extra="forbid")

    task: Task
    target: str
    columns: list[ColumnSpec]
    class_labels: list[str] | None = None  # classification: label of class index i

    @property
    def feature_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def numeric(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "numeric"]

    @property
    def categorical(self) -> list[str]:
        return [c.name for c in self.columns if c.kind == "categorical"]

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSchema:
        return cls.model_validate(json.loads(text))
