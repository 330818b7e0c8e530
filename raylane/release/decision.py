"""Promotion: what was decided on a challenger, the current champion it is judged against
(raylane/release/judging.py decides), and recording the decision on the version with the aliases.

A champion that cannot be scored is one of three things: ``broken`` (its files were read but
are not a raylane ONNX model: it may be replaced), ``incomparable`` (other task, classes or
columns: it blocks promotion) or ``unavailable`` (MLflow or the artifact store could not be
reached, or answered with a server error: nothing is known about it, so promotion is refused
until a rerun or a manual promotion).
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

from raylane.model.metrics import Metric
from raylane.model.mlflow_failures import http_status, is_transient
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import FeatureSchema
from raylane.model.store import (
    ONNX_FILE,
    SCHEMA_METADATA_KEY,
    UntrustedModelError,
    fetch_files,
    verify_digest,
)
from raylane.model.tags import (
    CHAMPION_VERSION,
    DECISION,
    DECISION_REASONS,
    DECISION_RETRY,
    champion_holdout_metric,
    holdout_metric,
)
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


def _forbidden_because_absent(client: MlflowClient, name: str, exc: Exception) -> bool:
    """Whether a 403 on the alias means only that no model ``name`` exists yet: MLflow's basic
    auth answers 403, not 404, for a model nobody created (it has no permission of its own, and
    the default grants none), while its search lists every model the caller may read. A model
    the caller cannot read at all could not take a new version from it either."""
    if http_status(exc) != 403:
        return False
    quoted = name.replace("\\", "\\\\").replace("'", "\\'")
    try:
        return not client.search_registered_models(filter_string=f"name = '{quoted}'")
    except Exception:
        return False


def load_champion(
    client: MlflowClient, name: str,
) -> tuple[ModelVersion | None, OnnxModel | None, ChampionProblem | None]:
    """The current champion of ``name`` and its graph (ONNX, no pickle), or why it has none:
    ``unavailable`` (the registry or artifact store failed: says nothing of the model) or
    ``broken`` (its files were fetched and do not load)."""
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except Exception as exc:
        if isinstance(exc, MlflowException) and exc.error_code in _NO_SUCH_ALIAS \
                and not is_transient(exc):
            return None, None, None
        if _forbidden_because_absent(client, name, exc):
            return None, None, None
        return None, None, ChampionProblem(
            "unavailable", f"the registry could not say which version of {name} is champion: "
            f"{exc}")
    with tempfile.TemporaryDirectory(prefix="raylane-champion-") as tmp:
        try:  # reaching the registry and the artifact store: a failure says nothing of the model
            local = fetch_files(client, champion, tmp)
        except UntrustedModelError as exc:  # it says something of the model: not to be trusted
            return champion, None, ChampionProblem("broken", f"champion v{champion.version} "
                                                   f"was refused: {exc}")
        except Exception as exc:
            return champion, None, ChampionProblem(
                "unavailable", f"champion v{champion.version} could not be fetched: {exc}")
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


def decision_tags(decision: Decision, metric: Metric) -> dict[str, str]:
    """The version tags that record ``decision`` and its numbers."""
    if decision.promoted:
        why = "passed the gates and beat the champion" if decision.champion_score is not None \
            else "passed the gates; no comparable champion before"
        why = "; ".join([why, *decision.notes])
    else:
        why = "; ".join(decision.reasons)
    tags = {
        DECISION: "promoted" if decision.promoted else "not promoted",
        DECISION_REASONS: why,
        holdout_metric(metric.name): f"{decision.score:.6g}",
        CHAMPION_VERSION: decision.champion_version or "none",
        champion_holdout_metric(metric.name): (
            f"{decision.champion_score:.6g}" if decision.champion_score is not None else "n/a"
        ),
    }
    if decision.champion_unavailable:
        tags[DECISION_RETRY] = "champion unavailable: rerun or promote by hand"
    return tags


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
            DECISION: "failed" if decision.promoted else "not promoted",
            DECISION_REASONS: f"moving the aliases failed ({type(exc).__name__}: "
            f"{exc}); decided: {decision_tags(decision, metric)[DECISION_REASONS]}",
        })
        raise


def _tag_quietly(client: MlflowClient, version: ModelVersion, tags: dict[str, str]) -> None:
    try:
        for key, value in tags.items():
            client.set_model_version_tag(version.name, version.version, key, value)
    except Exception as exc:  # the original error is the one to raise
        log.error("could not tag %s v%s with %s: %s", version.name, version.version, tags, exc)
