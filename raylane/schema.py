"""The feature schema: what a model was trained on and what its ONNX graph takes.

It travels with every registered model (in the MLflow ``MLmodel`` metadata), so serving knows the
columns, their kinds, the class labels and the task without importing any training code.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

Task = Literal["classification", "regression"]
ColumnKind = Literal["numeric", "categorical"]

# Categorical values are strings inside the graph; a missing category is the empty string.
MISSING_CATEGORY = ""
MAX_RECORDED_CATEGORIES = 200


class ColumnSpec(BaseModel):
    """One raw input column of the model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: ColumnKind
    dtype: str  # the pandas dtype the column was read with, for people reading the schema
    nullable: bool = True
    categories: list[str] | None = None  # categories seen in training (categorical only)

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
