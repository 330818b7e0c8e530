"""Fit one configuration of a model family, reporting the validation metric as it grows.

Boosted and bagged trees are grown in steps (boosting rounds, trees, iterations) so that a Tune
scheduler such as ASHA can stop a weak trial early. This module knows nothing about Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.pipeline import Pipeline

from raylane.data import PreparedData
from raylane.metrics import METRICS, Metric
from raylane.models import Family, build_estimator, build_pipeline, build_preprocessor, get_family

Reporter = Callable[[dict[str, Any]], None]


@dataclass
class FitResult:
    pipeline: Pipeline
    valid_score: float
    steps: int | None
    fit_seconds: float  # time spent fitting and scoring, excluding anything the caller does
    history: list[dict[str, Any]] = field(default_factory=list)


def model_output(model, X) -> np.ndarray:
    """Probabilities for classifiers, predictions for regressors."""
    return model.predict_proba(X) if hasattr(model, "predict_proba") else model.predict(X)


def fit_model(
    data: PreparedData,
    family: Family,
    params: dict[str, Any],
    metric: Metric,
    seed: int,
    report: Reporter | None = None,
    report_every: int = 10,
) -> FitResult:
    """Fit ``family`` with ``params`` on the training split, scoring on the validation split.

    With ``report``, a result ``{"valid_<metric>", "steps", "fit_seconds"}`` is sent every
    ``report_every`` steps (or once, for families trained in one go).
    """
    started = time.perf_counter()
    schema = data.schema
    preprocessor = build_preprocessor(schema, family.scale_numeric)
    Xt_train = preprocessor.fit_transform(data.train.X).astype(np.float32)
    Xt_valid = preprocessor.transform(data.valid.X).astype(np.float32)
    estimator = build_estimator(family, schema.task, params, seed)
    history: list[dict[str, Any]] = []
    # Time spent inside ``report`` is the caller's (Tune's report blocks until the driver takes
    # the result), so it is left out of ``fit_seconds``.
    reporting = 0.0

    def emit(steps: int | None, score: float) -> None:
        nonlocal reporting
        entry = {
            f"valid_{metric.name}": score,
            "steps": steps if steps is not None else 1,
            "fit_seconds": time.perf_counter() - started - reporting,
        }
        history.append(entry)
        if report is not None:
            before = time.perf_counter()
            report(entry)
            reporting += time.perf_counter() - before

    total = params.get(family.steps_param) if family.steps_param else None
    if family.steps_param and total is None:
        total = estimator.get_params()[family.steps_param]
    if family.steps_param is None or report is None:
        estimator.fit(Xt_train, data.train.y)
        score = metric(data.valid.y, model_output(estimator, Xt_valid))
        emit(total, score)
    elif isinstance(estimator, xgb.XGBModel):
        estimator.set_params(
            callbacks=[_XGBoostReporter(metric, Xt_valid, data.valid.y, report_every, total, emit)]
        )
        estimator.fit(Xt_train, data.train.y)
        estimator.set_params(callbacks=None)
        score = history[-1][f"valid_{metric.name}"]
    else:
        score = _fit_in_steps(
            estimator, family.steps_param, total, report_every, Xt_train, Xt_valid, data, metric,
            emit,
        )
    return FitResult(
        pipeline=build_pipeline(preprocessor, estimator),
        valid_score=score,
        steps=total,
        fit_seconds=time.perf_counter() - started - reporting,
        history=history,
    )


def _fit_in_steps(estimator, steps_param, total, every, Xt_train, Xt_valid, data, metric, emit):
    """Grow a warm-startable scikit-learn ensemble ``every`` steps at a time."""
    estimator.set_params(warm_start=True)
    done, score = 0, float("nan")
    while done < total:
        done = min(done + every, total)
        estimator.set_params(**{steps_param: done})
        estimator.fit(Xt_train, data.train.y)
        score = metric(data.valid.y, model_output(estimator, Xt_valid))
        emit(done, score)
    estimator.set_params(warm_start=False)
    return score


class _XGBoostReporter(xgb.callback.TrainingCallback):
    """Score the validation split every few boosting rounds and report it."""

    def __init__(self, metric: Metric, X_valid, y_valid, every: int, total: int, emit):
        self.metric, self.every, self.total, self.emit = metric, every, total, emit
        self.dvalid = xgb.DMatrix(X_valid)
        self.y_valid = y_valid

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log) -> bool:
        rounds = epoch + 1
        if rounds % self.every and rounds != self.total:
            return False
        raw = model.predict(self.dvalid, iteration_range=(0, rounds))
        if raw.ndim == 1 and self.metric.task == "classification":
            raw = np.column_stack([1.0 - raw, raw])
        self.emit(rounds, self.metric(self.y_valid, raw))
        return False


def train_trial(
    params: dict[str, Any], data: PreparedData, family_name: str, metric_name: str, seed: int,
    report_every: int,
) -> None:
    """One Ray Tune trial: fit with ``params``, reporting the validation metric as it grows.

    It lives here, not in ``raylane.tuning``, so trial workers import only what training needs
    (no MLflow, Optuna or config models).
    """
    from ray import tune

    fit_model(data, get_family(family_name), params, METRICS[metric_name], seed,
              report=tune.report, report_every=report_every)
