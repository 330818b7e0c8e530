"""What every model family provides: its estimators and defaults, how it grows in steps, and how
it converts to ONNX.

A family module subclasses ``Family`` (or ``WarmStartFamily``) and is registered in
``raylane.model.families``. Family modules stay light to import: trial workers import them, so
converters (skl2onnx, onnxmltools) are imported only inside ``onnx_converter``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from raylane.model.metrics import Metric
from raylane.model.schema import Task

StepReporter = Callable[[int | None, float], None]  # (steps grown so far, validation score)


def model_output(model, X) -> np.ndarray:
    """Probabilities for classifiers, predictions for regressors."""
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


@dataclass
class Growth:
    """What a family needs to grow a model: the preprocessed splits, the metric, and where to
    report the validation score every ``every`` steps (of ``total``)."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    metric: Metric
    every: int
    total: int | None  # steps the finished model has; None for families fitted in one go
    report: StepReporter

    def score(self, estimator) -> float:
        """The metric of ``estimator`` on the validation split."""
        return self.metric(self.y_valid, model_output(estimator, self.X_valid))


def fit_once(estimator, growth: Growth) -> float:
    """Fit in one go and report the validation score once, as of ``growth.total`` steps."""
    estimator.fit(growth.X_train, growth.y_train)
    score = growth.score(estimator)
    growth.report(growth.total, score)
    return score


class Family(ABC):
    """One model family. Subclasses set ``name`` and ``estimators`` and say what to default."""

    name: ClassVar[str]  # what configs call it (``model.family``)
    estimators: ClassVar[Mapping[Task, type[BaseEstimator]]]  # one per task
    aliases: ClassVar[tuple[str, ...]] = ()  # other names configs may use
    scale_numeric: ClassVar[bool] = False  # standardise numeric columns in the shared preprocessing
    # The parameter that counts boosting rounds / trees, for families grown in steps (so Tune's
    # ASHA can stop weak trials early). None: fitted in one go.
    steps_param: ClassVar[str | None] = None
    seed_param: ClassVar[str | None] = "random_state"

    @abstractmethod
    def defaults(self, task: Task) -> dict[str, Any]:
        """Hyperparameters raylane sets unless the config does (``n_jobs=1``: a trial owns the
        CPUs Tune gave it, no more)."""

    def hyperparameters(self, task: Task) -> set[str]:
        """The hyperparameters this family's estimator for ``task`` accepts."""
        return set(self.estimators[task]().get_params())

    def build_estimator(self, task: Task, params: dict[str, Any], seed: int) -> BaseEstimator:
        """An unfitted estimator: the family defaults, then ``params`` on top, seeded."""
        cls = self.estimators[task]
        merged = {**self.defaults(task), **params}
        if self.seed_param and self.seed_param in cls().get_params():
            merged.setdefault(self.seed_param, seed)
        return cls(**merged)

    def total_steps(self, estimator: BaseEstimator) -> int | None:
        """How many steps ``estimator`` grows to; None for families fitted in one go."""
        return estimator.get_params()[self.steps_param] if self.steps_param else None

    def grow(self, estimator: BaseEstimator, growth: Growth) -> float:
        """Fit ``estimator``, reporting as it grows; returns the final validation score.

        The default is one step: fit, then report once.
        """
        return fit_once(estimator, growth)

    @contextlib.contextmanager
    def onnx_converter(self) -> Iterator[None]:
        """Inside this block, skl2onnx can convert this family's estimators (register a converter,
        apply a version-guarded fix). The default relies on skl2onnx's own converters."""
        yield

    def for_onnx(self, estimator: BaseEstimator) -> BaseEstimator:
        """The fitted estimator to hand to the converter: ``estimator`` itself unless the family
        must adjust it (on a copy: the caller's model stays as it was)."""
        return estimator

    def __repr__(self) -> str:
        return f"<family {self.name}>"


class WarmStartFamily(Family):
    """A scikit-learn ensemble grown ``every`` steps at a time with ``warm_start``."""

    def grow(self, estimator: BaseEstimator, growth: Growth) -> float:
        if self.steps_param is None or growth.total is None:
            raise ValueError(f"{self.name}: {self.steps_param} must be a number to grow in steps")
        estimator.set_params(warm_start=True)
        done, score = 0, float("nan")
        while done < growth.total:
            done = min(done + growth.every, growth.total)
            estimator.set_params(**{self.steps_param: done})
            estimator.fit(growth.X_train, growth.y_train)
            score = growth.score(estimator)
            growth.report(done, score)
        estimator.set_params(warm_start=False)
        return score
