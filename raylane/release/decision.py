"""Promotion: a registered challenger becomes champion only if it passes the gates and beats the
current champion on the same holdout. The decision and its numbers are recorded on the version.

The champion is scored before anything is decided, and a champion that cannot be scored is one
of three things: ``broken`` (its files were read but are not a raylane ONNX model: it may be
replaced), ``incomparable`` (other task, classes or columns: it blocks promotion) or
``unavailable`` (MLflow or the artifact store could not be reached, or answered with a server
error: nothing is known about it, so promotion is refused until a rerun or a manual promotion).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from typing import Literal

import yaml
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from raylane.data.read import Split
from raylane.model.metrics import Metric
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import FeatureSchema
from raylane.model.store import (
    ONNX_FILE,
    SCHEMA_METADATA_KEY,
    UntrustedModelError,
    fetch_files,
    verify_digest,
)
from raylane.release.gates import GateResult
from raylane.tracking.errors import is_transient
from raylane.tracking.registry import CHALLENGER, CHAMPION, set_alias

log = logging.getLogger(__name__)

ProblemKind = Literal["broken", "incomparable", "unavailable"]
# What MLflow answers when the model or the alias does not exist: there is no champion.
_NO_SUCH_ALIAS = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True)
class ChampionProblem:
    """Why the champion has no score on this holdout (see the module docstring for kinds)."""

    kind: ProblemKind
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Decision:
    promoted: bool
    score: float
    champion_version: str | None = None
    champion_score: float | None = None
    reasons: list[str] = field(default_factory=list)  # why not promoted, one line each
    notes: list[str] = field(default_factory=list)  # remarks that did not block promotion
    champion_unavailable: bool = False  # refused only because the champion could not be reached

    @property
    def alias(self) -> str:
        return CHAMPION if self.promoted else CHALLENGER


def load_champion(
    client: MlflowClient, name: str,
) -> tuple[ModelVersion | None, OnnxModel | None, ChampionProblem | None]:
    """The current champion of ``name`` and its graph (ONNX, no pickle), or why it has none:
    ``unavailable`` (the registry or artifact store failed: says nothing of the model) or
    ``broken`` (its files were fetched and do not load)."""
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in _NO_SUCH_ALIAS and not is_transient(exc):
            return None, None, None
        return None, None, _unavailable(f"the registry could not say which version of {name} "
                                        f"is champion: {exc}")
    except Exception as exc:
        return None, None, _unavailable(f"the registry could not say which version of {name} "
                                        f"is champion: {exc}")
    with tempfile.TemporaryDirectory(prefix="raylane-champion-") as tmp:
        try:  # reaching the registry and the artifact store: a failure says nothing of the model
            local = fetch_files(client, champion, tmp)
        except UntrustedModelError as exc:  # it says something of the model: not to be trusted
            return champion, None, ChampionProblem("broken", f"champion v{champion.version} "
                                                   f"was refused: {exc}")
        except Exception as exc:
            return champion, None, _unavailable(
                f"champion v{champion.version} could not be fetched: {exc}")
        try:  # the files are here: one that does not load is a broken champion
            mlmodel = yaml.safe_load((local / "MLmodel").read_text()) or {}
            theirs = FeatureSchema.model_validate((mlmodel.get("metadata") or {})[
                SCHEMA_METADATA_KEY])
            onnx_bytes = (local / ONNX_FILE).read_bytes()
        except Exception as exc:
            return champion, None, ChampionProblem(
                "broken", f"champion v{champion.version} could not be loaded: "
                f"{type(exc).__name__}: {exc}")
        try:
            verify_digest(champion, onnx_bytes)
        except UntrustedModelError as exc:
            return champion, None, ChampionProblem("broken", f"champion v{champion.version} "
                                                   f"was refused: {exc}")
        try:
            return champion, OnnxModel(onnx_bytes, theirs), None
        except Exception as exc:
            return champion, None, ChampionProblem(
                "broken", f"champion v{champion.version} could not be loaded: "
                f"{type(exc).__name__}: {exc}")


UNAVAILABLE_ADVICE = ("promotion refused because the champion could not be compared. Rerun the "
                      "job once MLflow is reachable, or promote this version by hand (set the "
                      "'champion' alias)")


def score_champion(
    client: MlflowClient, name: str, holdout: Split, schema: FeatureSchema, metric: Metric,
) -> tuple[ModelVersion | None, float | None, ChampionProblem | None]:
    """The current champion, its score on this holdout (ONNX, no pickle), or why it has none."""
    champion, model, problem = load_champion(client, name)
    if model is None:
        return champion, None, problem
    theirs = model.schema
    if theirs.task != schema.task or theirs.class_labels != schema.class_labels:
        return champion, None, ChampionProblem(
            "incomparable", f"champion v{champion.version} predicts other classes or a task")
    missing = set(theirs.feature_names) - set(holdout.X.columns)
    if missing:
        return champion, None, ChampionProblem(
            "incomparable", f"champion v{champion.version} needs columns {sorted(missing)}")
    prediction = model.predict_frame(holdout.X[theirs.feature_names])
    output = prediction.probabilities if schema.task == "classification" else prediction.values
    return champion, metric(holdout.y, output), None


def _unavailable(message: str) -> ChampionProblem:
    return ChampionProblem("unavailable", message)


def decide(
    score: float, gates: GateResult, metric: Metric, champion_version: str | None,
    champion_score: float | None, problem: ChampionProblem | None,
) -> Decision:
    """Promote when the gates passed and the challenger strictly beats a comparable champion.

    No champion, or a broken one, does not block promotion (the problem is noted); a champion
    for another task, classes or columns blocks it, and so does one that could not be reached:
    without its score nothing says the challenger is better.
    """
    decision = Decision(promoted=False, score=score, reasons=list(gates.reasons),
                        champion_version=champion_version, champion_score=champion_score)
    if problem is not None and problem.kind == "unavailable":
        decision.champion_unavailable = True
        decision.reasons.append(f"{problem}; {UNAVAILABLE_ADVICE}")
    elif problem is not None and problem.kind == "incomparable":
        decision.reasons.append(f"{problem}; not comparable on this holdout")
    elif problem is not None:
        log.warning("%s; it does not block promotion", problem)
        decision.notes.append(f"{problem} (replaced)")
    if champion_score is not None and not metric.better(score, champion_score):
        decision.reasons.append(
            f"holdout {metric.name} {score:.4g} does not beat champion "
            f"v{champion_version}'s {champion_score:.4g}"
        )
    decision.promoted = not decision.reasons
    return decision


def decide_for(
    client: MlflowClient, name: str, score: float, gates: GateResult, holdout: Split,
    schema: FeatureSchema, metric: Metric,
) -> Decision:
    """Score the current champion of ``name`` and decide on a challenger scoring ``score``;
    nothing is written (the training job decides before it registers)."""
    champion, champion_score, problem = score_champion(client, name, holdout, schema, metric)
    return decide(score, gates, metric,
                  str(champion.version) if champion is not None else None,
                  champion_score, problem)


def decision_tags(decision: Decision, metric: Metric) -> dict[str, str]:
    """The version tags that record ``decision`` and its numbers."""
    if decision.promoted:
        why = "passed the gates and beat the champion" if decision.champion_score is not None \
            else "passed the gates; no comparable champion before"
        why = "; ".join([why, *decision.notes])
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
    if decision.champion_unavailable:
        tags["raylane.decision.retry"] = "champion unavailable: rerun or promote by hand"
    return tags


def failed_decision_tags(exc: BaseException) -> dict[str, str]:
    """Tags for a version whose decision could not be made or recorded."""
    return {"raylane.decision": "failed",
            "raylane.decision.reasons": f"deciding on promotion failed ({type(exc).__name__}: "
                                        f"{exc}); not promoted. Rerun the job, or promote this "
                                        "version by hand (set the 'champion' alias)"}


def record(client: MlflowClient, version: ModelVersion, decision: Decision,
           metric: Metric, tagged: bool = False) -> None:
    """Tag the version with ``decision`` (unless ``tagged``: it was registered with the tags),
    then move the aliases (``challenger`` always, ``champion`` if promoted). If moving them
    fails, the version's decision tag says so."""
    name = version.name
    if not tagged:
        for key, value in decision_tags(decision, metric).items():
            client.set_model_version_tag(name, version.version, key, value)
    try:
        set_alias(client, name, CHALLENGER, version.version)
        if decision.promoted:
            set_alias(client, name, CHAMPION, version.version)
    except BaseException as exc:  # a stop, too: the tags must not claim a promotion
        _tag_quietly(client, version, {
            "raylane.decision": "failed" if decision.promoted else "not promoted",
            "raylane.decision.reasons": f"moving the aliases failed ({type(exc).__name__}: "
            f"{exc}); decided: {decision_tags(decision, metric)['raylane.decision.reasons']}",
        })
        raise


def _tag_quietly(client: MlflowClient, version: ModelVersion, tags: dict[str, str]) -> None:
    try:
        for key, value in tags.items():
            client.set_model_version_tag(version.name, version.version, key, value)
    except Exception as exc:  # the original error is the one to raise
        log.error("could not tag %s v%s with %s: %s", version.name, version.version, tags, exc)


def decide_and_record(
    client: MlflowClient, version: ModelVersion, score: float, gates: GateResult,
    holdout: Split, schema: FeatureSchema, metric: Metric,
) -> Decision:
    """Score the current champion, decide on promotion, move the aliases, tag the version.

    For a version already registered: if deciding raises, the version is tagged
    ``raylane.decision=failed`` with the error before it propagates.
    """
    try:
        decision = decide_for(client, version.name, score, gates, holdout, schema, metric)
    except BaseException as exc:
        _tag_quietly(client, version, failed_decision_tags(exc))
        raise
    record(client, version, decision, metric)
    return decision
