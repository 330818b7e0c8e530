"""Compatibility imports: model families now live in ``raylane.families`` (one module each) and
the shared preprocessing in ``raylane.preprocessing``."""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator

from raylane.families import FAMILIES, FAMILY_ALIASES, Family, get_family
from raylane.preprocessing import build_pipeline, build_preprocessor
from raylane.schema import Task


def estimator_params(family: Family, task: Task) -> set[str]:
    """The hyperparameters an estimator of this family and task accepts."""
    return family.hyperparameters(task)


def build_estimator(family: Family, task: Task, params: dict[str, Any], seed: int) -> BaseEstimator:
    """An unfitted estimator with the family defaults, then ``params`` on top."""
    return family.build_estimator(task, params, seed)


__all__ = [
    "FAMILIES", "FAMILY_ALIASES", "Family", "build_estimator", "build_pipeline",
    "build_preprocessor", "estimator_params", "get_family",
]
