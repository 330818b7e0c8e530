"""Fit one configuration of a model family, reporting the validation metric as it grows.

Families grown in steps (boosting rounds, trees, iterations) report every few steps so that a Tune
scheduler such as ASHA can stop a weak trial early; each family says how it grows
(``Family.grow``). This module knows nothing about Ray except the trial function's ``tune.report``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sklearn.pipeline import Pipeline

from raylane.data.read import PreparedData
from raylane.model.families import Family, Growth, fit_once, get_family, model_output
from raylane.model.metrics import METRICS, Metric
from raylane.model.preprocessing import build_pipeline
from raylane.training import interrupts
from raylane.training.preprocessed import PreprocessedSplits, preprocess

Reporter = Callable[[dict[str, Any]], None]

__all__ = ["FitResult", "Reporter", "fit_model", "fit_preprocessed", "model_output",
           "train_trial"]


@dataclass
class FitResult:
    pipeline: Pipeline
    valid_score: float
    steps: int | None
    fit_seconds: float  # time spent fitting and scoring, excluding anything the caller does
    history: list[dict[str, Any]] = field(default_factory=list)


def fit_model(
    data: PreparedData,
    family: Family,
    params: dict[str, Any],
    metric: Metric,
    seed: int,
    report: Reporter | None = None,
    report_every: int = 10,
    splits: PreprocessedSplits | None = None,
) -> FitResult:
    """Fit ``family`` with ``params`` on the training split, scoring on the validation split.

    ``splits`` are the splits through the fitted preprocessing when the caller has them (a job
    fits it once, see :mod:`raylane.training.preprocessed`); without them it is fitted here.
    With ``report``, a result ``{"valid_<metric>", "steps", "fit_seconds"}`` is sent every
    ``report_every`` steps (or once, for families fitted in one go). Without it, the model is
    fitted in one go.
    """
    if splits is None:
        splits = preprocess(data, family)
    return fit_preprocessed(splits, family, params, metric, seed, report, report_every)


def fit_preprocessed(
    splits: PreprocessedSplits,
    family: Family,
    params: dict[str, Any],
    metric: Metric,
    seed: int,
    report: Reporter | None = None,
    report_every: int = 10,
) -> FitResult:
    """:func:`fit_model` on splits already through the preprocessing: only the model is fitted.

    ``fit_seconds`` counts the model's fitting and scoring, not the preprocessing.
    """
    if not splits.fits(family):
        raise ValueError(f"{family.name}: needs the preprocessing with scale_numeric="
                         f"{family.scale_numeric}, given scale_numeric={splits.scale_numeric}")
    started = time.perf_counter()
    if metric.pos_label is None:  # binary scores count the data's positive class (data.pos_label)
        metric = metric.with_pos_label(splits.pos_index)
    estimator = family.build_estimator(splits.task, params, seed)
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

    total = family.total_steps(estimator)
    growth = Growth(X_train=splits.X_train, y_train=splits.y_train, X_valid=splits.X_valid,
                    y_valid=splits.y_valid, metric=metric, every=report_every, total=total,
                    report=emit)
    score = fit_once(estimator, growth) if report is None else family.grow(estimator, growth)
    return FitResult(
        pipeline=build_pipeline(splits.preprocessor, estimator),
        valid_score=score,
        steps=total,
        fit_seconds=time.perf_counter() - started - reporting,
        history=history,
    )


def train_trial(
    params: dict[str, Any], splits: PreprocessedSplits, family_name: str, metric_name: str,
    seed: int, report_every: int,
) -> None:
    """One Ray Tune trial: fit the model with ``params`` on the job's preprocessed splits (read
    from the object store in place), reporting the validation metric as it grows.

    It lives here, not in ``raylane.training.tuning``, so trial workers import only what training
    needs
    (no MLflow, Optuna or config models).
    """
    from ray import tune

    interrupts.quiet_worker_stop()
    fit_preprocessed(splits, get_family(family_name), params, METRICS[metric_name], seed,
                     report=tune.report, report_every=report_every)
