"""The Models page's data: registered versions with their aliases and recorded decisions, one
version's training run in detail, two versions side by side, and promotion by a person.

Everything is read from what the training job records (raylane/release/publish.py, decision.py,
judging.py, raylane/training/job.py): version tags ``raylane.decision*``, ``raylane.judging.*``,
``raylane.holdout.*``, ``raylane.parity.max_abs_diff``; the run's ``holdout_*`` metrics, ``best.*``
params, ``raylane.gates`` / ``raylane.parity`` tags and ``plots/feature_importance.png``.
"""

from __future__ import annotations

import fnmatch
import getpass
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from raylane.console.registry_access import NotAllowed, NotFound, translate
from raylane.model.tags import (
    CHAMPION_VERSION,
    DECISION,
    DECISION_REASONS,
    DEMOTION_AT,
    DEMOTION_BY,
    DEMOTION_REASON,
    DEMOTION_REPLACED_BY,
    FAMILY,
    GATES,
    HOLDOUT_PREFIX,
    JUDGING_CHALLENGER,
    JUDGING_CHAMPION,
    JUDGING_CHAMPION_VERSION,
    JUDGING_METRIC,
    PARITY,
    PARITY_MAX_ABS_DIFF,
    PROMOTION_ACTION,
    PROMOTION_AT,
    PROMOTION_BY,
    PROMOTION_PREVIOUS_CHAMPION,
    PROMOTION_REASON,
    holdout_metric,
)
from raylane.tracking.registry import (  # the pages read the alias names from here
    CHALLENGER,  # noqa: F401
    CHAMPION,
    get_alias,
    set_alias,
)

PAGE_SIZE = 50
IMPORTANCE_PLOT = "plots/feature_importance.png"
# Tags the console writes when a person moves `champion`.
PROMOTED_BY, PROMOTED_WHY, PROMOTED_AT = (PROMOTION_BY, PROMOTION_REASON,
                                          PROMOTION_AT)
PROMOTED_FROM, PROMOTED_HOW = PROMOTION_PREVIOUS_CHAMPION, PROMOTION_ACTION
DEMOTED_BY, DEMOTED_WHY, DEMOTED_AT, DEMOTED_FOR = (
    DEMOTION_BY, DEMOTION_REASON, DEMOTION_AT,
    DEMOTION_REPLACED_BY)


class Refused(Exception):
    """A promotion the console will not make, with the reason."""


def versions_page(client: MlflowClient, name: str, page_token: str | None = None,
                  page_size: int = PAGE_SIZE) -> tuple[pd.DataFrame, str | None]:
    """One page of ``name``'s versions, newest first, as a table from their tags (no run is
    fetched: quick with hundreds of versions), and the token of the next page."""
    found = client.search_model_versions(f"name = '{_quote(name)}'", max_results=page_size,
                                         order_by=["version_number DESC"], page_token=page_token)
    aliases = aliases_of(client, name)
    rows = [version_row(v, [a for a, n in aliases.items() if n == str(v.version)])
            for v in found]
    return pd.DataFrame(rows, columns=VERSION_COLUMNS), found.token or None


VERSION_COLUMNS = ["version", "aliases", "registered", "decision", "metric", "score",
                   "champion score", "parity max |diff|", "family", "reasons", "run_id"]


def aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    """``name``'s aliases and the versions they name (search results do not carry them)."""
    return {a: str(n) for a, n in (client.get_registered_model(name).aliases or {}).items()}


def version_row(v: ModelVersion, aliases: list[str] | None = None) -> dict:
    """The table row of one version: what its tags say."""
    tags = v.tags or {}
    metric = tags.get(JUDGING_METRIC) or _holdout_metric(tags)
    score = tags.get(JUDGING_CHALLENGER) or tags.get(holdout_metric(metric))
    return {
        "version": int(v.version),
        "aliases": ", ".join(sorted(v.aliases or [] if aliases is None else aliases)),
        "registered": _time(v.creation_timestamp),
        "decision": tags.get(DECISION, "-"),
        "metric": metric or "-",
        "score": _number(score),
        "champion score": _number(tags.get(JUDGING_CHAMPION)),
        "parity max |diff|": _number(tags.get(PARITY_MAX_ABS_DIFF)),
        "family": tags.get(FAMILY, "-"),
        "reasons": tags.get(DECISION_REASONS, ""),
        "run_id": v.run_id or "",
    }


@dataclass
class VersionDetail:
    """One version with the run that produced it."""

    name: str
    version: str
    aliases: list[str]
    status: str
    tags: dict[str, str]
    run_id: str | None
    run_name: str | None = None
    experiment_id: str | None = None
    run_tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    run_missing: str | None = None  # why the run could not be read

    @property
    def decision(self) -> str:
        return self.tags.get(DECISION, "unknown")

    @property
    def reasons(self) -> list[str]:
        text = self.tags.get(DECISION_REASONS, "")
        return [r.strip() for r in text.split(";") if r.strip()]

    @property
    def gates(self) -> str:
        return self.run_tags.get(GATES, "not recorded")

    @property
    def parity(self) -> str:
        """``passed``, ``failed``, or ``not recorded``; a registered version passed its check
        (publish registers nothing otherwise) unless the run says it failed."""
        if PARITY in self.run_tags:
            return self.run_tags[PARITY]
        return "passed" if PARITY_MAX_ABS_DIFF in self.tags else "not recorded"

    def holdout_metrics(self) -> dict[str, float]:
        """Holdout metrics of the run (``holdout_*``), else the version's ``raylane.holdout.*``."""
        found = {k.removeprefix("holdout_"): v for k, v in self.metrics.items()
                 if k.startswith("holdout_")}
        if found:
            return found
        return {k.removeprefix(HOLDOUT_PREFIX): float(v) for k, v in self.tags.items()
                if k.startswith(HOLDOUT_PREFIX) and _is_number(v)}


def version_detail(client: MlflowClient, name: str, version: str) -> VersionDetail:
    """``name`` v``version`` and its training run (params, metrics, tags)."""
    v = client.get_model_version(name, str(version))
    detail = VersionDetail(name=name, version=str(v.version), aliases=sorted(v.aliases or []),
                           status=str(v.status), tags=dict(v.tags or {}), run_id=v.run_id)
    if v.run_id:
        try:
            run = client.get_run(v.run_id)
        except Exception as exc:  # a deleted run: the version still shows
            detail.run_missing = str(translate(exc))
        else:
            detail.run_name = run.info.run_name
            detail.experiment_id = run.info.experiment_id
            detail.run_tags = dict(run.data.tags)
            detail.metrics = dict(run.data.metrics)
            detail.params = dict(run.data.params)
    return detail


def blockers(detail: VersionDetail) -> list[str]:
    """Why ``detail`` must not become champion: failed checks, not a ready version."""
    found = []
    if detail.parity == "failed":
        found.append("its ONNX parity check failed (the graph does not match the trained model)")
    if detail.gates == "failed":
        gate_reasons = [r for r in detail.reasons if "does not beat" not in r]
        found.append("it failed its gates" + (f": {'; '.join(gate_reasons)}"
                                              if gate_reasons else ""))
    if detail.status not in ("READY", "ModelVersionStatus.READY"):
        found.append(f"the version is {detail.status}, not READY")
    return found


def rollback_target(champion: VersionDetail) -> str | None:
    """The version that was champion before ``champion``: what a console promotion recorded,
    else what the training job's decision compared against."""
    for key in (PROMOTED_FROM, CHAMPION_VERSION, JUDGING_CHAMPION_VERSION):
        value = champion.tags.get(key)
        if value and value not in ("none", champion.version):
            return value
    return None


def operator_name(env: dict[str, str] | None = None) -> str:
    """Who is acting: the MLflow user the credentials name, else the OS user."""
    env = os.environ if env is None else env
    if env.get("MLFLOW_TRACKING_USERNAME"):
        return env["MLFLOW_TRACKING_USERNAME"]
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


CURRENT_PERMISSIONS = "/api/3.0/mlflow/users/current/permissions"


def write_access(client: MlflowClient, name: str) -> tuple[bool, str]:
    """Whether these credentials may move ``name``'s aliases, and why not: asked of MLflow's
    basic-auth app (the current user's grants), never probed with a write, which would revert
    a promotion landing between its read and its write. A store without accounts (a local
    store, a server without the auth app) lets anyone write. Advisory: the registry still
    decides when the alias is set."""
    uri = client.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return True, "a local store has no accounts"
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        response = http_request(get_default_host_creds(uri), CURRENT_PERMISSIONS, "GET",
                                max_retries=0, raise_on_status=False)
    except Exception as exc:
        raise translate(exc) from exc
    if response.status_code == 404:
        return True, "this MLflow server has no accounts (no basic-auth app)"
    if response.status_code in (401, 403):
        return False, f"MLflow refused these credentials ({response.status_code})"
    if response.status_code != 200:
        raise translate(RuntimeError(f"{CURRENT_PERMISSIONS}: HTTP {response.status_code}"))
    return model_permission(response.json(), name)


def model_permission(body: dict, name: str) -> tuple[bool, str]:
    """Whether a ``users/current/permissions`` answer lets its user update model ``name``."""
    from mlflow.server.auth.permissions import PERMISSION_PRIORITY, get_permission

    if body.get("is_admin"):
        return True, "an MLflow admin account"
    grants = [row.get("permission", "") for row in body.get("permissions") or []
              if row.get("resource_type") == "registered_model"
              and fnmatch.fnmatchcase(name, str(row.get("resource_pattern", "")))]
    if not grants:
        return False, f"no grant on registered model {name!r} for these credentials"
    if "DENY" in grants:
        return False, f"these credentials are denied registered model {name!r}"
    best = max(grants, key=lambda g: PERMISSION_PRIORITY.get(g, 0))
    if get_permission(best).can_update:
        return True, f"{best} on registered model {name!r}"
    return False, f"only {best} on registered model {name!r}"


def promote(client: MlflowClient, name: str, version: str, who: str, why: str,
            action: str = "promote") -> str | None:
    """Move ``champion`` to ``version`` after its checks; tag it and the previous champion with
    who, why and when. Returns the previous champion's version (None if there was none).

    Raises :class:`Refused` (failed checks, no reason given, already champion) and
    :class:`NotAllowed` (credentials that may not write the registry)."""
    who, why = who.strip(), why.strip()
    if not who or not why:
        raise Refused("say who you are and why: both are recorded on the version")
    detail = version_detail(client, name, version)
    problems = blockers(detail)
    if problems:
        raise Refused(f"v{version} is not promoted: {'; '.join(problems)}")
    previous = get_alias(client, name, CHAMPION)
    if previous is not None and str(previous.version) == str(version):
        raise Refused(f"v{version} is already champion")
    try:
        set_alias(client, name, CHAMPION, str(version))
    except Exception as exc:
        err = translate(exc)
        if isinstance(err, NotAllowed | NotFound):
            raise err from exc
        raise
    now = datetime.now(UTC).isoformat(timespec="seconds")
    prev = str(previous.version) if previous is not None else None
    for key, value in {PROMOTED_BY: who, PROMOTED_WHY: why[:5000], PROMOTED_AT: now,
                       PROMOTED_FROM: prev or "none", PROMOTED_HOW: action}.items():
        client.set_model_version_tag(name, str(version), key, value)
    if prev is not None:
        for key, value in {DEMOTED_BY: who, DEMOTED_WHY: why[:5000], DEMOTED_AT: now,
                           DEMOTED_FOR: str(version)}.items():
            client.set_model_version_tag(name, prev, key, value)
    return prev


def compare(a: VersionDetail, b: VersionDetail) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics (holdout, validation, baseline, judged score, parity) and parameters of two
    versions side by side; parameters that differ first."""
    def metrics(d: VersionDetail) -> dict[str, float]:
        out = {f"holdout {k}": v for k, v in d.holdout_metrics().items()}
        for k, v in d.metrics.items():
            if k.startswith(("valid_", "train_", "baseline_", "best_valid_")) or k in (
                    "overfit_gap", "parity.max_abs_diff", "trials.count"):
                out[k.replace("_", " ", 1)] = v
        if _is_number(d.tags.get(JUDGING_CHALLENGER)):
            out["judged score"] = float(d.tags[JUDGING_CHALLENGER])
        return out

    ma, mb = metrics(a), metrics(b)
    keys = sorted(set(ma) | set(mb))
    m = pd.DataFrame({"metric": keys, f"v{a.version}": [ma.get(k) for k in keys],
                      f"v{b.version}": [mb.get(k) for k in keys]})
    m["difference"] = m[f"v{b.version}"] - m[f"v{a.version}"]
    pkeys = sorted(set(a.params) | set(b.params))
    p = pd.DataFrame({"parameter": pkeys, f"v{a.version}": [a.params.get(k, "") for k in pkeys],
                      f"v{b.version}": [b.params.get(k, "") for k in pkeys]})
    p["differs"] = p[f"v{a.version}"] != p[f"v{b.version}"]
    p = p.sort_values(["differs", "parameter"], ascending=[False, True]).reset_index(drop=True)
    return m, p


def run_image(client: MlflowClient, run_id: str, path: str = IMPORTANCE_PLOT) -> bytes | None:
    """A PNG the run logged (``plots/<name>.png``), or None when it has none."""
    with tempfile.TemporaryDirectory(prefix="raylane-console-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as exc:
            err = translate(exc)
            if isinstance(err, NotFound) or "No such file" in str(exc) or "not found" in str(
                    exc).lower():
                return None
            raise err from exc
        return Path(local).read_bytes()


def run_link(tracking_uri: str, detail: VersionDetail) -> str | None:
    """The run in MLflow's UI, when MLflow is a server."""
    if not tracking_uri.startswith(("http://", "https://")) or not detail.run_id:
        return None
    return (f"{tracking_uri.rstrip('/')}/#/experiments/{detail.experiment_id}/runs/"
            f"{detail.run_id}")


def _holdout_metric(tags: dict[str, str]) -> str | None:
    for key in tags:
        if key.startswith(HOLDOUT_PREFIX) and _is_number(tags[key]):
            return key.removeprefix(HOLDOUT_PREFIX)
    return None


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def _number(value: str | None) -> float | None:
    return float(value) if _is_number(value) else None


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, UTC) if ms else None


def _quote(name: str) -> str:
    return name.replace("'", "\\'")
