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
from raylane.model_store import load_registered_model
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
    tracking_uri: str,
) -> tuple[ModelVersion | None, float | None, str | None]:
    """The current champion, its score on this holdout (ONNX, no pickle), or why it has none."""
    champion = get_alias(client, name, CHAMPION)
    if champion is None:
        return None, None, None
    try:
        registered = load_registered_model(f"models:/{name}@{CHAMPION}", tracking_uri)
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


def decide_and_record(
    client: MlflowClient, version: ModelVersion, score: float, gates: GateResult,
    holdout: Split, schema: FeatureSchema, metric: Metric, tracking_uri: str,
) -> Decision:
    """Decide on promotion, move the aliases, and tag the version with the decision."""
    name = version.name
    champion, champion_score, problem = score_champion(
        client, name, holdout, schema, metric, tracking_uri
    )
    decision = Decision(promoted=False, score=score, reasons=list(gates.reasons))
    if champion is not None:
        decision.champion_version = str(champion.version)
        decision.champion_score = champion_score
    if problem and champion_score is None and "could not be loaded" not in problem:
        decision.reasons.append(problem + "; not comparable on this holdout")
    elif problem:
        log.warning(problem)
    if champion_score is not None and not metric.better(score, champion_score):
        decision.reasons.append(
            f"holdout {metric.name} {score:.4g} does not beat champion "
            f"v{champion.version}'s {champion_score:.4g}"
        )
    decision.promoted = not decision.reasons
    set_alias(client, name, CHALLENGER, version.version)
    if decision.promoted:
        set_alias(client, name, CHAMPION, version.version)
    if decision.promoted:
        why = "passed the gates and beat the champion" if champion_score is not None else (
            "passed the gates; no comparable champion before"
        )
    else:
        why = "; ".join(decision.reasons)
    tags = {
        "raylane.decision": "promoted" if decision.promoted else "not promoted",
        "raylane.decision.reasons": why,
        f"raylane.holdout.{metric.name}": f"{score:.6g}",
        "raylane.champion.version": decision.champion_version or "none",
        f"raylane.champion.holdout.{metric.name}": (
            f"{champion_score:.6g}" if champion_score is not None else "n/a"
        ),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    return decision
