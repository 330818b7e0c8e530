"""Linear models (logistic regression, ridge) on standardised numbers: fitted in one step;
skl2onnx converts them."""

from __future__ import annotations

from typing import Any

from sklearn.linear_model import LogisticRegression, Ridge

from raylane.model.families.base import Family
from raylane.model.schema import Task


class Linear(Family):
    name = "linear"
    aliases = ("logistic_regression", "ridge")
    estimators = {"classification": LogisticRegression, "regression": Ridge}
    scale_numeric = True

    def defaults(self, task: Task) -> dict[str, Any]:
        return {"max_iter": 2000} if task == "classification" else {}
