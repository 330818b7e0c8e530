"""Holdout metrics accumulated over batches equal sklearn's over the whole table: AUC from score
histograms within its stated bound (and 1e-3), the rest exactly."""

from __future__ import annotations

import numpy as np
import pytest

from raylane.model.batched_metrics import Accumulator
from raylane.model.metrics import METRICS


def _batched(task, y, out, pos=None, parts=7) -> Accumulator:
    acc = Accumulator(task)
    for idx in np.array_split(np.arange(len(y)), parts):
        part = Accumulator(task)
        part.add(y[idx], out[idx], pos)
        acc = acc.merge(part)
    return acc


@pytest.mark.parametrize("pos", [0, 1])
def test_binary_metrics_match_sklearn(pos):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50_000)
    score = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    proba = np.column_stack([1 - score, score])
    got = _batched("classification", y, proba, pos).metrics()
    exact = METRICS["roc_auc"](y, proba)
    acc = _batched("classification", y, proba, pos)
    assert abs(got["roc_auc"] - exact) <= max(acc.auc_error_bound(), 1e-12)
    assert abs(got["roc_auc"] - exact) < 1e-3
    for name in ("accuracy", "log_loss"):
        assert got[name] == pytest.approx(METRICS[name](y, proba), rel=1e-9)
    assert got["f1"] == pytest.approx(METRICS["f1"].with_pos_label(pos)(y, proba), rel=1e-12)


def test_tied_scores_count_half_as_in_the_exact_auc():
    y = np.array([0, 1, 0, 1, 1, 0])
    score = np.array([0.5, 0.5, 0.2, 0.9, 0.5, 0.5])
    proba = np.column_stack([1 - score, score])
    assert _batched("classification", y, proba, parts=3).metrics()["roc_auc"] == pytest.approx(
        METRICS["roc_auc"](y, proba))


def test_multiclass_and_regression_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 3000)
    proba = rng.dirichlet([1, 1, 1], 3000)
    got = _batched("classification", y, proba).metrics()
    assert "roc_auc" not in got
    for name in ("accuracy", "log_loss", "f1"):
        assert got[name] == pytest.approx(METRICS[name](y, proba), rel=1e-9)
    t = rng.normal(size=3000)
    pred = t + rng.normal(scale=0.3, size=3000)
    got = _batched("regression", t, pred).metrics()
    for name in ("rmse", "mae", "r2"):
        assert got[name] == pytest.approx(METRICS[name](t, pred), rel=1e-9)
