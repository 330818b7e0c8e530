"""Random forests: grown a few trees at a time with ``warm_start``; skl2onnx converts them."""

from __future__ import annotations

from typing import Any

from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from raylane.model.families.base import WarmStartFamily
from raylane.model.schema import Task


class RandomForest(WarmStartFamily):
    name = "random_forest"
    estimators = {"classification": RandomForestClassifier, "regression": RandomForestRegressor}
    steps_param = "n_estimators"

    def defaults(self, task: Task) -> dict[str, Any]:
        return {"n_estimators": 100, "n_jobs": 1}
