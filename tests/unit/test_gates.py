"""The promotion gates and the underfit/overfit diagnosis (raylane/release/gates.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from serving_support import train
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline

from raylane.config import GatesConfig
from raylane.data.read import infer_schema, split_data
from raylane.model.metrics import METRICS
from raylane.release.gates import Evaluation, check_gates, evaluate


def evaluation(**over) -> Evaluation:
    fields = {"holdout": {"roc_auc": 0.8, "accuracy": 0.75}, "baseline": {"roc_auc": 0.5},
              "train_score": 0.9, "valid_score": 0.8, "metric": "roc_auc", "diagnosis": "ok",
              "overfit_gap": 0.125}
    return Evaluation(**{**fields, **over})


def test_no_gates_configured_pass():
    result = check_gates(evaluation(), GatesConfig())
    assert result.passed and result.reasons == []


@pytest.mark.parametrize(("floor", "passed"), [(0.79, True), (0.8, True), (0.81, False)])
def test_min_holdout_is_a_floor(floor, passed):
    result = check_gates(evaluation(), GatesConfig(min_holdout={"roc_auc": floor}))
    assert result.passed is passed
    if not passed:
        assert result.reasons == [f"holdout roc_auc 0.8 is below the floor {floor}"]


@pytest.mark.parametrize(("ceiling", "passed"), [(0.81, True), (0.8, True), (0.79, False)])
def test_max_holdout_is_a_ceiling(ceiling, passed):
    result = check_gates(evaluation(), GatesConfig(max_holdout={"roc_auc": ceiling}))
    assert result.passed is passed
    if not passed:
        assert result.reasons == [f"holdout roc_auc 0.8 is above the ceiling {ceiling}"]


def test_a_gated_metric_the_holdout_lacks_fails_both_ways():
    gates = GatesConfig(min_holdout={"f1": 0.1}, max_holdout={"log_loss": 1.0})
    result = check_gates(evaluation(), gates)
    assert not result.passed
    assert result.reasons == ["holdout f1 n/a is below the floor 0.1",
                              "holdout log_loss n/a is above the ceiling 1.0"]


def test_must_beat_baseline_refuses_an_underfit_model_only_when_on():
    underfit = evaluation(holdout={"roc_auc": 0.5}, diagnosis="underfit")
    refused = check_gates(underfit, GatesConfig(must_beat_baseline=True))
    assert not refused.passed
    assert refused.reasons == ["holdout roc_auc 0.5 does not beat the baseline 0.5"]
    assert check_gates(underfit, GatesConfig(must_beat_baseline=False)).passed


def test_reject_overfit_refuses_an_overfit_model_only_when_on():
    overfit = evaluation(train_score=1.0, valid_score=0.7, overfit_gap=0.3 / 0.7,
                         diagnosis="overfit")
    assert check_gates(overfit, GatesConfig()).passed  # reject_overfit is off by default
    refused = check_gates(overfit, GatesConfig(reject_overfit=True, max_overfit_gap=0.25))
    assert not refused.passed
    assert refused.reasons == ["overfit: train roc_auc 1 vs validation 0.7 (gap 42.9% > 25.0%)"]


def test_every_failed_gate_is_reported():
    bad = evaluation(holdout={"roc_auc": 0.5}, diagnosis="underfit")
    result = check_gates(bad, GatesConfig(min_holdout={"roc_auc": 0.6},
                                          max_holdout={"roc_auc": 0.4}))
    assert len(result.reasons) == 3


# ---------------------------------------------------------------- the diagnosis


@pytest.fixture(scope="module")
def credit():
    return train("credit", n_estimators=30)


def test_a_real_model_is_ok_and_beats_the_baseline(credit):
    ev = evaluate(credit.pipeline, credit.data, credit.metric, max_overfit_gap=10.0)
    assert ev.diagnosis == "ok"
    assert ev.holdout["roc_auc"] > ev.baseline["roc_auc"] + 0.1
    assert ev.baseline["roc_auc"] == pytest.approx(0.5)  # the prior predicts one value for all
    assert ev.train_score > ev.valid_score and ev.overfit_gap == pytest.approx(
        (ev.train_score - ev.valid_score) / ev.valid_score)


def test_overfit_when_the_train_advantage_exceeds_the_allowed_gap(credit):
    ev = evaluate(credit.pipeline, credit.data, credit.metric, max_overfit_gap=10.0)
    just_below = evaluate(credit.pipeline, credit.data, credit.metric,
                          max_overfit_gap=ev.overfit_gap * 0.99)
    just_above = evaluate(credit.pipeline, credit.data, credit.metric,
                          max_overfit_gap=ev.overfit_gap * 1.01)
    assert just_below.diagnosis == "overfit" and just_above.diagnosis == "ok"


def test_underfit_when_the_model_does_not_beat_the_baseline(credit):
    prior = Pipeline([("m", DummyClassifier(strategy="prior"))]).fit(
        credit.data.train.X, credit.data.train.y)
    # underfit wins over overfit: the gap threshold 0 would call anything with a gap overfit
    ev = evaluate(prior, credit.data, credit.metric, max_overfit_gap=0.0)
    assert ev.diagnosis == "underfit"
    assert ev.holdout["roc_auc"] == pytest.approx(ev.baseline["roc_auc"])


def regression_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1],
                          "y": 3 * x[:, 0] - x[:, 1] + rng.normal(scale=0.1, size=600)})
    schema = infer_schema(frame, "y", "regression")
    return split_data(frame, schema, 0.2, 0.2, seed)


def test_regression_diagnosis_uses_the_metric_direction():
    data = regression_data()
    rmse = METRICS["rmse"]
    linear = Pipeline([("m", LinearRegression())]).fit(data.train.X, data.train.y)
    ev = evaluate(linear, data, rmse, max_overfit_gap=10.0)
    assert ev.diagnosis == "ok" and ev.holdout["rmse"] < ev.baseline["rmse"] / 5
    # lower is better: the gap is how much lower train RMSE is, relative to validation's
    expected = max(0.0, ev.valid_score - ev.train_score) / ev.valid_score
    assert ev.overfit_gap == pytest.approx(expected)
    mean = Pipeline([("m", DummyRegressor())]).fit(data.train.X, data.train.y)
    assert evaluate(mean, data, rmse, max_overfit_gap=10.0).diagnosis == "underfit"
