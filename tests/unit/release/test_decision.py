"""Every branch of the promotion rule that runs (raylane/release/judging.py: ``beats`` compares
the scores, ``decision_from`` turns the gates and the verdict into a decision), without a
registry.

The verdicts ``judge`` builds against a real (SQLite) registry, champion problems included, are
in test_publish.py.
"""

from __future__ import annotations

import logging

import pytest

from raylane.model.metrics import METRICS
from raylane.release.decision import CHALLENGER, CHAMPION, decision_tags
from raylane.release.gates import GateResult
from raylane.release.judging import Verdict, beats, decision_from

AUC, RMSE = METRICS["roc_auc"], METRICS["rmse"]
PASSED = GateResult(passed=True)


def verdict(score: float = 0.7, champion: str | None = None, champion_score: float | None = None,
            **kw) -> Verdict:
    return Verdict(metric="roc_auc", rows=500, challenger_score=score, champion_version=champion,
                   champion_score=champion_score, **kw)


def test_no_champion_yet_promotes():
    d = decision_from(verdict(0.7), PASSED)
    assert d.promoted and d.reasons == [] and d.alias == CHAMPION
    assert d.champion_version is None and d.champion_score is None
    assert decision_tags(d, AUC)["raylane.decision.reasons"] == \
        "passed the gates; no comparable champion before"


def test_failed_gates_block_promotion_even_without_a_champion():
    gates = GateResult(passed=False, reasons=["holdout roc_auc 0.7 is below the floor 0.8"])
    d = decision_from(verdict(0.7), gates)
    assert not d.promoted and d.alias == CHALLENGER
    assert d.reasons == ["holdout roc_auc 0.7 is below the floor 0.8"]
    assert gates.reasons == ["holdout roc_auc 0.7 is below the floor 0.8"]  # not mutated


def test_challenger_that_beats_the_champion_is_promoted():
    assert beats(AUC, 0.81, 0.80)
    d = decision_from(verdict(0.81, "3", 0.80), PASSED)
    assert d.promoted and d.champion_version == "3" and d.champion_score == 0.80
    assert decision_tags(d, AUC)["raylane.decision.reasons"] == \
        "passed the gates and beat the champion"


def test_challenger_that_loses_is_not_promoted():
    assert not beats(AUC, 0.79, 0.80)
    lost = "holdout roc_auc 0.79 does not beat champion v3's 0.8 on 500 rows neither trained on"
    d = decision_from(verdict(0.79, "3", 0.80, blocking=[lost]), PASSED)
    assert not d.promoted and d.reasons == [lost]
    assert decision_tags(d, AUC)["raylane.decision.reasons"] == lost


def test_a_tie_keeps_the_champion():
    assert not beats(AUC, 0.8, 0.8) and not beats(RMSE, 10.0, 10.0)


@pytest.mark.parametrize(("score", "wins"), [(9.0, True), (10.0, False), (11.0, False)])
def test_lower_is_better_for_error_metrics(score, wins):
    assert beats(RMSE, score, 10.0) is wins


@pytest.mark.parametrize(("metric", "challenger", "champion", "wins"), [
    (AUC, 0.805, 0.80, False), (AUC, 0.811, 0.80, True),  # must gain more than 0.01
    (RMSE, 9.995, 10.0, False), (RMSE, 9.98, 10.0, True),
])
def test_a_gain_below_min_improvement_keeps_the_champion(metric, challenger, champion, wins):
    assert beats(metric, challenger, champion, min_improvement=0.01) is wins


def test_gate_reasons_and_a_lost_comparison_are_both_listed():
    gates = GateResult(passed=False, reasons=["overfit"])
    d = decision_from(verdict(0.7, "2", 0.9, blocking=["does not beat champion v2"]), gates)
    assert not d.promoted and d.reasons == ["overfit", "does not beat champion v2"]


def test_a_broken_champion_does_not_block_promotion(caplog):
    note = "champion v2 could not be loaded: bad graph (replaced)"
    with caplog.at_level(logging.WARNING, logger="raylane.release.judging"):
        d = decision_from(verdict(0.7, "2", notes=[note]), PASSED)
    assert d.promoted and d.reasons == [] and d.champion_version == "2"
    assert note in caplog.text
    assert "bad graph (replaced)" in decision_tags(d, AUC)["raylane.decision.reasons"]


def test_a_champion_for_other_classes_or_columns_blocks_promotion():
    why = "champion v2 predicts other classes or a task; not comparable on this holdout"
    d = decision_from(verdict(0.7, "2", blocking=[why]), PASSED)
    assert not d.promoted and not d.champion_unavailable and d.reasons == [why]


def test_an_unreachable_champion_blocks_promotion_and_says_what_to_do():
    why = "champion v2 could not be fetched: 503; promotion refused because ..."
    unreachable = verdict(0.99, "2", blocking=[why], champion_unavailable=True)
    d = decision_from(unreachable, PASSED)
    assert not d.promoted and d.champion_unavailable and d.alias == CHALLENGER
    assert d.reasons == [why]
    tags = decision_tags(d, AUC)
    assert tags["raylane.decision"] == "not promoted" and "raylane.decision.retry" in tags


def test_failed_gates_are_no_reason_to_retry_an_unreachable_champion():
    """A rerun would not promote a challenger that failed its gates: no retry tag."""
    unreachable = verdict(0.99, "2", blocking=["champion v2 could not be fetched"],
                          champion_unavailable=True)
    d = decision_from(unreachable, GateResult(passed=False, reasons=["overfit"]))
    assert not d.promoted and not d.champion_unavailable
    assert "raylane.decision.retry" not in decision_tags(d, AUC)


class _BasicAuthRegistry:
    """What MLflow's basic auth answers a writer about the alias of a model: 403 whether the
    model is absent (no permission of its own yet) or exists unreadable; search lists what the
    caller may read."""

    def __init__(self, readable: list[str]) -> None:
        self.readable = readable

    def get_model_version_by_alias(self, name, alias):
        from mlflow.exceptions import MlflowException

        raise MlflowException("API request to endpoint /api/2.0/mlflow/registered-models/alias "
                              "failed with error code 403 != 200. Response body: "
                              "'Permission denied'")

    def search_registered_models(self, filter_string):
        return [n for n in self.readable if filter_string == f"name = '{n}'"]


def test_a_403_for_a_model_nobody_created_yet_is_no_champion():
    from raylane.release.decision import load_champion

    assert load_champion(_BasicAuthRegistry([]), "credit") == (None, None, None)


def test_a_403_for_an_existing_model_is_an_unavailable_champion():
    from raylane.release.decision import load_champion

    champion, model, problem = load_champion(_BasicAuthRegistry(["credit"]), "credit")
    assert champion is None and model is None
    assert problem.kind == "unavailable" and "403" in problem.message
