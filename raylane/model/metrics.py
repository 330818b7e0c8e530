"""Metrics by name, with the direction that makes them better."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from sklearn import metrics as skm

from raylane.model.schema import Task

Mode = Literal["max", "min"]


@dataclass(frozen=True)
class Metric:
    name: str
    task: Task
    mode: Mode
    fn: Callable[..., float]  # (y_true, probabilities or predictions[, pos_label])
    uses_pos_label: bool = False  # binary scores that depend on which class is positive
    pos_label: int | None = None  # that class's index; see ``with_pos_label``

    def __call__(self, y_true: np.ndarray, output: np.ndarray) -> float:
        if self.uses_pos_label:
            return float(self.fn(y_true, output, self.pos_label))
        return float(self.fn(y_true, output))

    def with_pos_label(self, index: int | None) -> Metric:
        """This metric counting class ``index`` as positive (binary targets)."""
        return replace(self, pos_label=index)

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return a > b if self.mode == "max" else a < b


def _labels(proba: np.ndarray) -> np.ndarray:
    return np.asarray(proba).argmax(axis=1)


def _roc_auc(y: np.ndarray, proba: np.ndarray) -> float:
    proba = np.asarray(proba)
    if proba.shape[1] == 2:
        return skm.roc_auc_score(y, proba[:, 1])
    return skm.roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(proba.shape[1]))


def _f1(y: np.ndarray, proba: np.ndarray, pos_label: int | None) -> float:
    if np.asarray(proba).shape[1] != 2:
        return skm.f1_score(y, _labels(proba), average="macro")
    if pos_label is None:
        raise ValueError("f1 of a binary target needs the positive class (data.pos_label)")
    return skm.f1_score(y, _labels(proba), average="binary", pos_label=pos_label)


def _log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    return skm.log_loss(y, proba, labels=np.arange(np.asarray(proba).shape[1]))


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        Metric("accuracy", "classification", "max", lambda y, p: skm.accuracy_score(y, _labels(p))),
        Metric("roc_auc", "classification", "max", _roc_auc),
        Metric("f1", "classification", "max", _f1, uses_pos_label=True),
        Metric("log_loss", "classification", "min", _log_loss),
        Metric("rmse", "regression", "min", lambda y, p: skm.root_mean_squared_error(y, p)),
        Metric("mae", "regression", "min", skm.mean_absolute_error),
        Metric("r2", "regression", "max", skm.r2_score),
    ]
}
DEFAULT_METRIC: dict[Task, str] = {"classification": "roc_auc", "regression": "rmse"}


def metrics_for(task: Task) -> list[Metric]:
    return [m for m in METRICS.values() if m.task == task]


def evaluate_all(task: Task, y_true: np.ndarray, output: np.ndarray,
                 pos_label: int | None = None) -> dict[str, float]:
    """Every metric of ``task`` (binary ones counting class ``pos_label`` as positive); one that
    cannot be computed here (one class in y) is left out."""
    results = {}
    for metric in metrics_for(task):
        try:
            results[metric.name] = metric.with_pos_label(pos_label)(y_true, output)
        except ValueError:
            continue
    return results
