"""XGBoost: grown one boosting round at a time, reported through an XGBoost callback; converted
to ONNX by onnxmltools' XGBoost converter, registered with skl2onnx."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.base import BaseEstimator
from xgboost import XGBClassifier, XGBRegressor

from raylane.model.families.base import Family, Growth
from raylane.model.schema import Task


class XGBoost(Family):
    name = "xgboost"
    estimators = {"classification": XGBClassifier, "regression": XGBRegressor}
    steps_param = "n_estimators"

    def defaults(self, task: Task) -> dict[str, Any]:
        return {"tree_method": "hist", "n_jobs": 1, "n_estimators": 200}

    def build_estimator(self, task: Task, params: dict[str, Any], seed: int) -> BaseEstimator:
        if task == "classification" and {**self.defaults(task), **params}.get(
                "n_estimators") is not None:
            params = {"eval_metric": "logloss", **params}
        return super().build_estimator(task, params, seed)

    def grow(self, estimator: BaseEstimator, growth: Growth) -> float:
        reporter = _Reporter(growth)
        estimator.set_params(callbacks=[reporter])
        estimator.fit(growth.X_train, growth.y_train)
        estimator.set_params(callbacks=None)
        return reporter.last_score

    @contextlib.contextmanager
    def onnx_converter(self) -> Iterator[None]:
        _register_converters()
        yield


class _Reporter(xgb.callback.TrainingCallback):
    """Score the validation split every few boosting rounds and report it."""

    def __init__(self, growth: Growth):
        self.growth = growth
        self.dvalid = xgb.DMatrix(growth.X_valid)
        self.last_score = float("nan")

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log) -> bool:
        g, rounds = self.growth, epoch + 1
        if rounds % g.every and rounds != g.total:
            return False
        raw = model.predict(self.dvalid, iteration_range=(0, rounds))
        if raw.ndim == 1 and g.metric.task == "classification":
            raw = np.column_stack([1.0 - raw, raw])
        self.last_score = g.metric(g.y_valid, raw)
        g.report(rounds, self.last_score)
        return False


@functools.cache
def _register_converters() -> None:
    """Teach skl2onnx to convert XGBoost estimators with onnxmltools' converter (once)."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )
