"""Holdout evaluation, a dummy baseline, an underfit/overfit diagnosis, and the promotion gates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.pipeline import Pipeline

from raylane.config import GatesConfig
from raylane.data.read import PreparedData
from raylane.model.families import model_output
from raylane.model.metrics import METRICS, Metric, evaluate_all


@dataclass
class Evaluation:
    holdout: dict[str, float]
    baseline: dict[str, float]
    train_score: float
    valid_score: float
    metric: str
    diagnosis: str  # "ok", "underfit" or "overfit"
    overfit_gap: float


@dataclass
class GateResult:
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why it failed, one line each


def evaluate(
    pipeline: Pipeline, data: PreparedData, metric: Metric, max_overfit_gap: float
) -> Evaluation:
    """Score the pipeline on every split; the baseline predicts the training prior or mean."""
    task = data.schema.task
    pos = data.pos_index
    holdout = evaluate_all(task, data.holdout.y, model_output(pipeline, data.holdout.X), pos)
    dummy = (
        DummyClassifier(strategy="prior") if task == "classification" else DummyRegressor()
    ).fit(np.zeros((len(data.train.y), 1)), data.train.y)
    dummy_out = model_output(dummy, np.zeros((len(data.holdout.y), 1)))
    if task == "classification":
        dummy_out = _all_classes(dummy_out, dummy.classes_, len(data.schema.class_labels or []))
    baseline = evaluate_all(task, data.holdout.y, dummy_out, pos)
    train_score = metric(data.train.y, model_output(pipeline, data.train.X))
    valid_score = metric(data.valid.y, model_output(pipeline, data.valid.X))
    gap = _relative_gap(metric, train_score, valid_score)
    if metric.name in holdout and metric.name in baseline and not metric.better(
        holdout[metric.name], baseline[metric.name]
    ):
        diagnosis = "underfit"
    elif gap > max_overfit_gap:
        diagnosis = "overfit"
    else:
        diagnosis = "ok"
    return Evaluation(holdout, baseline, train_score, valid_score, metric.name, diagnosis, gap)


def _all_classes(proba: np.ndarray, seen: np.ndarray, n_classes: int) -> np.ndarray:
    full = np.zeros((proba.shape[0], n_classes))
    full[:, seen] = proba
    return full


def _relative_gap(metric: Metric, train: float, valid: float) -> float:
    """How much better training is than validation, relative to the validation score."""
    advantage = train - valid if metric.mode == "max" else valid - train
    return max(0.0, advantage) / max(abs(valid), 1e-12)


def check_gates(evaluation: Evaluation, gates: GatesConfig) -> GateResult:
    """Apply the config's gates to a holdout evaluation."""
    reasons = []
    for name, floor in gates.min_holdout.items():
        value = evaluation.holdout.get(name)
        if value is None or value < floor:
            reasons.append(f"holdout {name} {_fmt(value)} is below the floor {floor}")
    for name, ceiling in gates.max_holdout.items():
        value = evaluation.holdout.get(name)
        if value is None or value > ceiling:
            reasons.append(f"holdout {name} {_fmt(value)} is above the ceiling {ceiling}")
    if gates.must_beat_baseline and evaluation.diagnosis == "underfit":
        m = evaluation.metric
        reasons.append(
            f"holdout {m} {_fmt(evaluation.holdout.get(m))} does not beat the baseline "
            f"{_fmt(evaluation.baseline.get(m))}"
        )
    if gates.reject_overfit and evaluation.diagnosis == "overfit":
        reasons.append(
            f"overfit: train {evaluation.metric} {evaluation.train_score:.4g} vs validation "
            f"{evaluation.valid_score:.4g} (gap {evaluation.overfit_gap:.1%} > "
            f"{gates.max_overfit_gap:.1%})"
        )
    return GateResult(passed=not reasons, reasons=reasons)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


__all__ = ["METRICS", "Evaluation", "GateResult", "check_gates", "evaluate"]
