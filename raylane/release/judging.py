"""Judging a challenger against the champion fairly.

Both models are scored through their ONNX graphs (the challenger's exported graph, never the
native model) on the same rows, rows neither trained on: the stable holdout's rows among the
newest labelled data (raylane/data/holdout.py). A tie or a gain below ``min_improvement`` keeps the
champion. The verdict, with the holdout's definition, is recorded on the challenger's version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from mlflow import MlflowClient

from raylane.data.read import Split
from raylane.model.metrics import Metric
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import FeatureSchema
from raylane.model.tags import (
    HOLDOUT_FRACTION,
    HOLDOUT_HASH_SEED,
    HOLDOUT_KEY,
    HOLDOUT_TIME_COLUMN,
    JUDGING_CHALLENGER,
    JUDGING_CHAMPION,
    JUDGING_CHAMPION_VERSION,
    JUDGING_METRIC,
    JUDGING_MIN_IMPROVEMENT,
    JUDGING_ROWS,
    JUDGING_SCORED_WITH,
)
from raylane.release.decision import UNAVAILABLE_ADVICE, Decision, load_champion
from raylane.release.gates import GateResult

log = logging.getLogger(__name__)


@dataclass
class JudgingSet:
    """The rows to judge on, what defines them, and how much better a challenger must be."""

    rows: Split
    definition: dict = field(default_factory=lambda: {"holdout": "the challenger's holdout"})
    min_improvement: float = 0.0
    min_rows: int = 1


@dataclass
class Verdict:
    metric: str
    rows: int
    challenger_score: float | None
    champion_version: str | None = None
    champion_score: float | None = None
    min_improvement: float = 0.0
    blocking: list[str] = field(default_factory=list)  # reasons the champion stays
    notes: list[str] = field(default_factory=list)  # logged, not blocking
    definition: dict = field(default_factory=dict)
    champion_unavailable: bool = False  # blocked only because the champion could not be fetched

    @property
    def challenger_wins(self) -> bool:
        return not self.blocking

    def tags(self) -> dict[str, str]:
        """Tags recorded on the challenger's version (and the run that produced it)."""
        d = self.definition
        tags = {
            JUDGING_METRIC: self.metric,
            JUDGING_ROWS: str(self.rows),
            JUDGING_CHALLENGER: _fmt(self.challenger_score),
            JUDGING_CHAMPION: _fmt(self.champion_score),
            JUDGING_CHAMPION_VERSION: self.champion_version or "none",
            JUDGING_MIN_IMPROVEMENT: f"{self.min_improvement:g}",
            JUDGING_SCORED_WITH: "onnx (both models)",
            HOLDOUT_KEY: ",".join(d.get("key_columns", [])) or "n/a",
            HOLDOUT_HASH_SEED: str(d.get("hash_seed", "n/a")),
            HOLDOUT_FRACTION: str(d.get("fraction", "n/a")),
            HOLDOUT_TIME_COLUMN: str(d.get("time_column") or "none"),
        }
        return {k: v[:5000] for k, v in tags.items()}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def score_graph(model: OnnxModel, rows: Split, metric: Metric) -> float:
    """``metric`` of the graph's output (probabilities or values) on ``rows``."""
    prediction = model.predict_frame(rows.X[model.schema.feature_names])
    output = prediction.probabilities if model.schema.task == "classification" \
        else prediction.values
    return metric(rows.y, np.asarray(output, dtype=np.float64))


def judge(
    client: MlflowClient, name: str, challenger: OnnxModel, judging: JudgingSet,
    metric: Metric,
) -> Verdict:
    """Score the challenger's graph and the current champion's graph on the judging rows."""
    rows = judging.rows
    verdict = Verdict(metric=metric.name, rows=len(rows.y), challenger_score=None,
                      min_improvement=judging.min_improvement,
                      definition=dict(judging.definition))
    try:
        verdict.challenger_score = score_graph(challenger, rows, metric)
    except ValueError as exc:  # e.g. one class only among the judging rows
        verdict.blocking.append(f"{metric.name} cannot be computed on the {len(rows.y)} "
                                f"judging rows: {exc}")
    current, model, problem = load_champion(client, name)
    if current is not None:
        verdict.champion_version = str(current.version)
    if problem is not None and problem.kind == "unavailable":  # try again later
        verdict.blocking.append(f"{problem}; {UNAVAILABLE_ADVICE}")
        verdict.champion_unavailable = True
        return verdict
    if problem is not None:  # not a graph raylane can ever score: it cannot block
        verdict.notes.append(f"{problem} (replaced)")
        return verdict
    if current is None or model is None:
        return verdict
    tag = f"champion v{current.version}"
    problem = _incomparable(model.schema, challenger.schema, rows)
    if problem:
        verdict.blocking.append(f"{tag} {problem}; not comparable on this holdout")
        return verdict
    if verdict.rows < judging.min_rows:
        verdict.blocking.append(f"only {verdict.rows} judging rows (judging.min_rows is "
                                f"{judging.min_rows}); the champion stays")
        return verdict
    try:
        verdict.champion_score = score_graph(model, rows, metric)
    except ValueError as exc:
        verdict.blocking.append(f"{tag} cannot be scored on the judging rows: {exc}")
        return verdict
    if verdict.challenger_score is not None and not beats(
            metric, verdict.challenger_score, verdict.champion_score, judging.min_improvement):
        verdict.blocking.append(
            f"holdout {metric.name} {verdict.challenger_score:.4g} does not beat {tag}'s "
            f"{verdict.champion_score:.4g}"
            + (f" by more than {judging.min_improvement:g}" if judging.min_improvement else "")
            + f" on {verdict.rows} rows neither trained on"
        )
    return verdict


def beats(metric: Metric, challenger: float, champion: float, min_improvement: float = 0.0) -> bool:
    """True when ``challenger`` is better than ``champion`` by more than ``min_improvement``, in
    ``metric``'s direction: a tie keeps the champion."""
    gain = challenger - champion if metric.mode == "max" else champion - challenger
    return gain > min_improvement


def _incomparable(theirs: FeatureSchema, ours: FeatureSchema, rows: Split) -> str | None:
    if theirs.task != ours.task or theirs.class_labels != ours.class_labels:
        return "predicts other classes or a task"
    missing = set(theirs.feature_names) - set(rows.X.columns)
    if missing:
        return f"needs columns {sorted(missing)}"
    return None


def decision_from(verdict: Verdict, gates: GateResult) -> Decision:
    """Promote when the gates passed and the verdict has nothing against the challenger."""
    for note in verdict.notes:
        log.warning(note)
    reasons = [*gates.reasons, *verdict.blocking]
    return Decision(
        promoted=not reasons,
        score=verdict.challenger_score if verdict.challenger_score is not None else float("nan"),
        champion_version=verdict.champion_version, champion_score=verdict.champion_score,
        reasons=reasons, notes=list(verdict.notes),
        champion_unavailable=verdict.champion_unavailable and not gates.reasons,
    )
