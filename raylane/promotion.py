"""Promotion: a registered challenger becomes champion only if it passes the gates and beats the
current champion on the same holdout. The decision and its numbers are recorded on the version."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from raylane.data import Split
from raylane.evaluation import GateResult
from raylane.metrics import Metric
from raylane.model_store import load_version
from raylane.onnx_model import OnnxModel
from raylane.registry import CHALLENGER, CHAMPION, get_alias, set_alias
from raylane.schema import FeatureSchema

log = logging.getLogger(__name__)


@dataclass
class Decision:
    promoted: bool
    score: float
    champion_version: str | None = None
    champion_score: float | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def alias(self) -> str:
        return CHAMPION if self.promoted else CHALLENGER


def score_champion(
    client: MlflowClient, name: str, holdout: Split, schema: FeatureSchema, metric: Metric,
) -> tuple[ModelVersion | None, float | None, str | None]:
    """The current champion, its score on this holdout (ONNX, no pickle), or why it has none."""
    champion = get_alias(client, name, CHAMPION)
    if champion is None:
        return None, None, None
    try:
        registered = load_version(client, f"models:/{name}@{CHAMPION}")
        model = OnnxModel(registered.onnx_bytes, registered.schema)
    except Exception as exc:  # a broken champion must not block a good challenger
        return champion, None, f"champion v{champion.version} could not be loaded: {exc}"
    theirs = registered.schema
    if theirs.task != schema.task or theirs.class_labels != schema.class_labels:
        return champion, None, f"champion v{champion.version} predicts other classes or a task"
    missing = set(theirs.feature_names) - set(holdout.X.columns)
    if missing:
        return champion, None, f"champion v{champion.version} needs columns {sorted(missing)}"
    prediction = model.predict_frame(holdout.X[theirs.feature_names])
    output = prediction.probabilities if schema.task == "classification" else prediction.values
    return champion, metric(holdout.y, output), None


def decide(
    score: float, gates: GateResult, metric: Metric, champion_version: str | None,
    champion_score: float | None, problem: str | None,
) -> Decision:
    """Promote when the gates passed and the challenger strictly beats a comparable champion.

    No champion, or one that could not be loaded, does not block promotion (the problem is only
    logged); a champion for another task, classes or columns blocks it.
    """
    decision = Decision(promoted=False, score=score, reasons=list(gates.reasons),
                        champion_version=champion_version, champion_score=champion_score)
    if problem and champion_score is None and "could not be loaded" not in problem:
        decision.reasons.append(problem + "; not comparable on this holdout")
    elif problem:
        log.warning(problem)
    if champion_score is not None and not metric.better(score, champion_score):
        decision.reasons.append(
            f"holdout {metric.name} {score:.4g} does not beat champion "
            f"v{champion_version}'s {champion_score:.4g}"
        )
    decision.promoted = not decision.reasons
    return decision


def record(client: MlflowClient, version: ModelVersion, decision: Decision,
           metric: Metric) -> None:
    """Move the aliases (``challenger`` always, ``champion`` if promoted) and tag the version."""
    name = version.name
    set_alias(client, name, CHALLENGER, version.version)
    if decision.promoted:
        set_alias(client, name, CHAMPION, version.version)
        why = "passed the gates and beat the champion" if decision.champion_score is not None \
            else "passed the gates; no comparable champion before"
    else:
        why = "; ".join(decision.reasons)
    tags = {
        "raylane.decision": "promoted" if decision.promoted else "not promoted",
        "raylane.decision.reasons": why,
        f"raylane.holdout.{metric.name}": f"{decision.score:.6g}",
        "raylane.champion.version": decision.champion_version or "none",
        f"raylane.champion.holdout.{metric.name}": (
            f"{decision.champion_score:.6g}" if decision.champion_score is not None else "n/a"
        ),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)


def decide_and_record(
    client: MlflowClient, version: ModelVersion, score: float, gates: GateResult,
    holdout: Split, schema: FeatureSchema, metric: Metric,
) -> Decision:
    """Score the current champion, decide on promotion, move the aliases, tag the version."""
    champion, champion_score, problem = score_champion(
        client, version.name, holdout, schema, metric
    )
    decision = decide(score, gates, metric,
                      str(champion.version) if champion is not None else None,
                      champion_score, problem)
    record(client, version, decision, metric)
    return decision
