"""Every branch of the promotion decision (raylane/release/decision.py ``decide``), without a
registry.

The same branches through a real (SQLite) registry are in test_publish.py.
"""

from __future__ import annotations

import logging

import pytest

from raylane.model.metrics import METRICS
from raylane.release.decision import CHALLENGER, CHAMPION, ChampionProblem, decide, decision_tags
from raylane.release.gates import GateResult

AUC, RMSE = METRICS["roc_auc"], METRICS["rmse"]
PASSED = GateResult(passed=True)


def test_no_champion_yet_promotes():
    d = decide(0.7, PASSED, AUC, champion_version=None, champion_score=None, problem=None)
    assert d.promoted and d.reasons == [] and d.alias == CHAMPION
    assert d.champion_version is None and d.champion_score is None


def test_failed_gates_block_promotion_even_without_a_champion():
    gates = GateResult(passed=False, reasons=["holdout roc_auc 0.7 is below the floor 0.8"])
    d = decide(0.7, gates, AUC, None, None, None)
    assert not d.promoted and d.alias == CHALLENGER
    assert d.reasons == ["holdout roc_auc 0.7 is below the floor 0.8"]
    assert gates.reasons == ["holdout roc_auc 0.7 is below the floor 0.8"]  # not mutated


def test_challenger_that_beats_the_champion_is_promoted():
    d = decide(0.81, PASSED, AUC, "3", 0.80, None)
    assert d.promoted and d.champion_version == "3" and d.champion_score == 0.80


def test_challenger_that_loses_is_not_promoted():
    d = decide(0.79, PASSED, AUC, "3", 0.80, None)
    assert not d.promoted
    assert d.reasons == ["holdout roc_auc 0.79 does not beat champion v3's 0.8"]


def test_a_tie_keeps_the_champion():
    d = decide(0.8, PASSED, AUC, "3", 0.8, None)
    assert not d.promoted and "does not beat champion v3" in d.reasons[0]


@pytest.mark.parametrize(("score", "promoted"), [(9.0, True), (10.0, False), (11.0, False)])
def test_lower_is_better_for_error_metrics(score, promoted):
    assert decide(score, PASSED, RMSE, "1", 10.0, None).promoted is promoted


def test_gate_reasons_and_a_lost_comparison_are_both_listed():
    gates = GateResult(passed=False, reasons=["overfit"])
    d = decide(0.7, gates, AUC, "2", 0.9, None)
    assert not d.promoted and len(d.reasons) == 2 and d.reasons[0] == "overfit"


def test_a_broken_champion_does_not_block_promotion(caplog):
    problem = ChampionProblem("broken", "champion v2 could not be loaded: bad graph")
    with caplog.at_level(logging.WARNING, logger="raylane.promotion"):
        d = decide(0.7, PASSED, AUC, "2", None, problem)
    assert d.promoted and d.reasons == [] and d.champion_version == "2"
    assert str(problem) in caplog.text
    assert "bad graph (replaced)" in decision_tags(d, AUC)["raylane.decision.reasons"]


def test_a_champion_for_other_classes_or_columns_blocks_promotion():
    problem = ChampionProblem("incomparable", "champion v2 predicts other classes or a task")
    d = decide(0.7, PASSED, AUC, "2", None, problem)
    assert not d.promoted and not d.champion_unavailable
    assert d.reasons == [str(problem) + "; not comparable on this holdout"]


def test_an_unreachable_champion_blocks_promotion_and_says_what_to_do():
    problem = ChampionProblem("unavailable", "champion v2 could not be fetched: 503")
    d = decide(0.99, PASSED, AUC, "2", None, problem)
    assert not d.promoted and d.champion_unavailable and d.alias == CHALLENGER
    assert d.reasons[0].startswith("champion v2 could not be fetched: 503; promotion refused")
    assert "Rerun the job" in d.reasons[0] and "promote this version by hand" in d.reasons[0]
    tags = decision_tags(d, AUC)
    assert tags["raylane.decision"] == "not promoted" and "raylane.decision.retry" in tags
