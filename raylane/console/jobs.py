"""The Training page's data: recent tuning runs in MLflow, and training jobs on a Ray cluster
through Ray's Job Submission SDK, submitted as the README's `ray job submit` does (this repository
as the working_dir, ``ray_jobs/runtime_env.yaml``'s excludes, ``python -m
ray_jobs.train_pipeline --config ... --set ...``), validated before anything is sent."""

from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import Run

from raylane.config import ConfigError, PipelineConfig, load_config
from raylane.console.registry_access import translate
from raylane.model.tags import (
    DECISION,
    FAMILY,
    GATES,
    JOB_BY,
    JOB_CONFIG,
    JOB_DEADLINE,
    JOB_DEADLINE_S,
    JOB_STARTED_BY,
    MODEL_VERSION,
    TASK,
)
from raylane.ray_auth import auth_headers

ROOT = Path(__file__).resolve().parents[2]
SEARCH_PLOT = "plots/search_progress.png"
EXCLUDED_SUFFIXES = ("-monitoring", "-ct")
LOG_TAIL_LINES = 400
AGENT_WAIT_TRIES = 15


class RayUnreachable(Exception):
    """Ray's dashboard (Jobs API) did not answer, or refused the token."""


# ---------------------------------------------------------------- configs and overrides


def configs(folder: Path) -> list[Path]:
    """The YAML configs in ``folder`` (``tune_configs/``), sorted by name."""
    return sorted(p for p in folder.glob("*.y*ml") if p.is_file())


@dataclass(frozen=True)
class Limits:
    """What a console user may ask of the cluster: at most ``max_samples`` trials, a search of
    at most ``max_time_budget_s``, and a job that is stopped ``margin_s`` after that (loading,
    export and registration run outside the search)."""

    max_samples: int = 50
    max_time_budget_s: float = 3600.0
    margin_s: float = 1800.0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        return cls(max_samples=int(env.get("RAYLANE_CONSOLE_MAX_SAMPLES", cls.max_samples)),
                   max_time_budget_s=float(env.get("RAYLANE_CONSOLE_MAX_TIME_BUDGET_S",
                                                   cls.max_time_budget_s)),
                   margin_s=float(env.get("RAYLANE_CONSOLE_JOB_MARGIN_S", cls.margin_s)))


# The keys a console user may set: how the search runs, never where data, runs or state live.
CHOICES = {"tune.search_alg": ("random", "optuna"), "tune.scheduler.type": ("asha", "fifo")}
NUMBERS = {"tune.num_samples": int, "tune.time_budget_s": float,
           "tune.scheduler.grace_period": int, "tune.scheduler.reduction_factor": float}
BOUNDS = ("lower", "upper", "q")  # of a distribution in the config's model.search_space


def editable_keys() -> list[str]:
    """The keys the Training page accepts, for its help text."""
    return [*NUMBERS, *CHOICES, "model.search_space.<name>.lower|upper|q"]


def parse_overrides(text: str, config: Path, limits: Limits | None = None) -> list[str]:
    """``key=value`` overrides, one per line (blank lines and ``# comments`` skipped; a leading
    ``--set`` is allowed), each an editable key of ``config`` with a value in bounds. Raises
    ConfigError naming the line and key otherwise: nothing naming data, MLflow or storage."""
    limits = limits or Limits.from_env()
    space = _search_space(config)
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().removeprefix("--set").strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key or " " in key:
            raise ConfigError(f"override line {number}: expected key=value, got {raw.strip()!r}")
        try:
            parsed = yaml.safe_load(value) if value else None
        except yaml.YAMLError:
            parsed = value
        problem = _check_override(key, parsed, space, limits)
        if problem:
            raise ConfigError(f"override line {number}: {key}: {problem}")
        out.append(f"{key}={value}")
    return out


def _check_override(key: str, value: object, space: dict, limits: Limits) -> str | None:
    """Why ``key=value`` may not be set from the console, or None."""
    if key in CHOICES:
        return None if value in CHOICES[key] else f"expected one of {list(CHOICES[key])}"
    if key in NUMBERS or _is_bound(key, space):
        kind = NUMBERS.get(key, float)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                kind is int and not isinstance(value, int)):
            return f"expected {'an integer' if kind is int else 'a number'}, got {value!r}"
        if key == "tune.num_samples" and not 1 <= value <= limits.max_samples:
            return f"expected 1 to {limits.max_samples} trials (the console's limit)"
        if key == "tune.time_budget_s" and not 0 < value <= limits.max_time_budget_s:
            return (f"expected a time budget above 0 and at most {limits.max_time_budget_s:g} s "
                    "(the console's limit)")
        return None
    if key.startswith("model.search_space."):
        return (f"only the numeric bounds ({', '.join(BOUNDS)}) of the config's distributions "
                f"may be set: {sorted(space) or 'it has none'}")
    return ("not settable from the console; it sets only the search: "
            f"{', '.join(editable_keys())}")


def _is_bound(key: str, space: dict) -> bool:
    parts = key.split(".")
    if len(parts) != 4 or parts[:2] != ["model", "search_space"] or parts[3] not in BOUNDS:
        return False
    dist = space.get(parts[2])
    return isinstance(dist, dict) and parts[3] in dist


def _search_space(config: Path) -> dict:
    try:
        raw = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{config}: cannot read: {exc}") from None
    return ((raw.get("model") or {}).get("search_space") or {}) if isinstance(raw, dict) else {}


def bounded(config: Path, overrides: list[str], limits: Limits | None = None) -> list[str]:
    """The overrides plus the console's caps the config itself exceeds: ``tune.num_samples``
    and ``tune.time_budget_s`` (a config without a time budget gets the largest allowed)."""
    limits = limits or Limits.from_env()
    checked = load_config(config, overrides)
    out = list(overrides)
    if checked.tune.num_samples > limits.max_samples:
        out.append(f"tune.num_samples={limits.max_samples}")
    budget = checked.tune.time_budget_s
    if budget is None or budget > limits.max_time_budget_s:
        out.append(f"tune.time_budget_s={limits.max_time_budget_s:g}")
    return out


def deadline_s(config: Path, overrides: list[str], limits: Limits | None = None) -> int:
    """How long the job may run: its search's time budget plus the margin."""
    limits = limits or Limits.from_env()
    budget = load_config(config, overrides).tune.time_budget_s or limits.max_time_budget_s
    return int(budget + limits.margin_s)


def job_env(tracking_uri: str) -> dict[str, str]:
    """The console's store as the job's ``MLFLOW_TRACKING_URI`` (set by the console, so the
    job trusts it as an operator's location) when a job on the cluster can use it: a server
    or an absolute path."""
    if tracking_uri.startswith(("http://", "https://", "sqlite:////")):
        return {"MLFLOW_TRACKING_URI": tracking_uri}
    return {}


def validate(config: Path, overrides: list[str]) -> PipelineConfig:
    """The config as the job will see it (raises ConfigError with the bad key)."""
    return load_config(config, overrides)


# ---------------------------------------------------------------- submission


def entrypoint(config: Path, overrides: list[str], root: Path = ROOT,
               deadline: int | None = None) -> str:
    """The job's command line; the config relative to the working_dir when it lies inside.
    With ``deadline`` (s), coreutils' ``timeout`` sends the job SIGTERM then (it saves its
    state and ends its runs, as on ``ray job stop``) and SIGKILL a minute later: Ray's Jobs API
    has no deadline of its own."""
    try:
        path = str(config.resolve().relative_to(root.resolve()))
    except ValueError:
        path = str(config.resolve())
    args = ["timeout", "--kill-after=60", str(deadline)] if deadline else []
    args += ["python", "-m", "ray_jobs.train_pipeline", "--config", path]
    for override in overrides:
        args += ["--set", override]
    return shlex.join(args)


def runtime_env(root: Path = ROOT, env: dict[str, str] | None = None) -> dict:
    """This repository as the job's working_dir with ``ray_jobs/runtime_env.yaml``'s excludes
    and environment (what ``ray job submit --working-dir . --runtime-env ...`` sends), plus
    ``env``."""
    spec = yaml.safe_load((root / "ray_jobs" / "runtime_env.yaml").read_text()) or {}
    spec["env_vars"] = {**(spec.get("env_vars") or {}), **(env or {})}
    return {"working_dir": str(root), **spec}


def jobs_client(address: str):
    """A JobSubmissionClient for Ray's dashboard at ``address`` (raises RayUnreachable)."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as exc:
        raise RayUnreachable(_short(exc)) from None


def submit(address: str, config: Path, overrides: list[str], who: str, *, folder: Path,
           tracking_uri: str, limits: Limits | None = None, root: Path = ROOT) -> str:
    """Check, then submit the training job; its id. ``config`` must be one of ``folder``'s
    configs and ``overrides`` what parse_overrides accepted; the job carries the console's caps
    and a deadline. ConfigError before anything is sent."""
    limits = limits or Limits.from_env()
    if config.resolve() not in {p.resolve() for p in configs(folder)}:
        raise ConfigError(f"config: {config} is not one of the configs in {folder}")
    overrides = bounded(config, overrides, limits)
    deadline = deadline_s(config, overrides, limits)
    ends = datetime.now(UTC).timestamp() + deadline
    client = jobs_client(address)
    for attempt in range(AGENT_WAIT_TRIES):
        try:
            return client.submit_job(
                entrypoint=entrypoint(config, overrides, root, deadline),
                runtime_env=runtime_env(root, job_env(tracking_uri)),
                metadata={JOB_STARTED_BY: "train", JOB_CONFIG: config.name, JOB_BY: who,
                          JOB_DEADLINE_S: str(deadline),
                          JOB_DEADLINE: datetime.fromtimestamp(ends, UTC).isoformat(
                              timespec="seconds")})
        except Exception as exc:
            # a head that just started answers before its job agent registered
            if "No available agent" in str(exc) and attempt + 1 < AGENT_WAIT_TRIES:
                time.sleep(2)
                continue
            raise RayUnreachable(_short(exc)) from None
    raise AssertionError("unreachable")


@dataclass
class JobState:
    job_id: str
    status: str
    message: str
    entrypoint: str
    started: datetime | None
    ended: datetime | None
    log: str

    @property
    def finished(self) -> bool:
        return self.status in ("SUCCEEDED", "FAILED", "STOPPED")


def job_state(address: str, job_id: str, tail: int = LOG_TAIL_LINES) -> JobState:
    """Status, message and the last ``tail`` lines of the job's log."""
    client = jobs_client(address)
    try:
        info = client.get_job_info(job_id)
        log = client.get_job_logs(job_id)
    except Exception as exc:
        raise RayUnreachable(_short(exc)) from None
    return JobState(job_id=job_id, status=str(getattr(info.status, "value", info.status)),
                    message=info.message or "", entrypoint=info.entrypoint,
                    started=_ms(info.start_time), ended=_ms(info.end_time),
                    log="\n".join(log.splitlines()[-tail:]))


def recent_jobs(address: str, limit: int = 20) -> pd.DataFrame:
    """The newest ``limit`` jobs on the cluster that run a raylane job."""
    client = jobs_client(address)
    try:
        jobs = client.list_jobs()
    except Exception as exc:
        raise RayUnreachable(_short(exc)) from None
    rows = [{"job": j.submission_id or j.job_id, "status": str(getattr(j.status, "value",
                                                                        j.status)),
             "started": _ms(j.start_time), "ended": _ms(j.end_time),
             "by": (j.metadata or {}).get(JOB_BY, ""),
             "entrypoint": j.entrypoint}
            for j in jobs if "ray_jobs." in (j.entrypoint or "")]
    frame = pd.DataFrame(rows, columns=["job", "status", "started", "ended", "by",
                                        "entrypoint"])
    return frame.sort_values("started", ascending=False, na_position="first").head(limit)


# ---------------------------------------------------------------- tuning runs in MLflow


def tuning_runs(client: MlflowClient, limit: int = 20) -> list[Run]:
    """The newest ``limit`` training jobs' parent runs (not trials, monitoring or CT runs)."""
    experiments = [e.experiment_id for e in client.search_experiments(max_results=100)
                   if not e.name.endswith(EXCLUDED_SUFFIXES)]
    if not experiments:
        return []
    return list(client.search_runs(
        experiments, f"tags.`{TASK}` LIKE '%'", order_by=["attributes.start_time DESC"],
        max_results=limit))


def runs_table(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for run in runs:
        m, t, p = run.data.metrics, run.data.tags, run.data.params
        best = next((v for k, v in m.items() if k.startswith("best_valid_")), None)
        metric = next((k.removeprefix("best_valid_") for k in m if k.startswith("best_valid_")),
                      "")
        rows.append({"started": _ms(run.info.start_time), "run": run.info.run_name,
                     "status": run.info.status, "family": t.get(FAMILY, "-"),
                     "trials": m.get("trials.count"), "metric": metric, "best valid": best,
                     "gates": t.get(GATES, "-"),
                     "version": t.get(MODEL_VERSION, "-"),
                     "decision": t.get(DECISION, "-"),
                     "rows": p.get("rows.train"), "run_id": run.info.run_id})
    return pd.DataFrame(rows, columns=["started", "run", "status", "family", "trials", "metric",
                                       "best valid", "gates", "version", "decision", "rows",
                                       "run_id"])


def search_plot(client: MlflowClient, run_id: str) -> bytes | None:
    """The run's search-progress figure, or None."""
    from raylane.console.monitoring import artifact_bytes

    return artifact_bytes(client, run_id, SEARCH_PLOT)


def _ms(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value else None


def _short(exc: BaseException) -> str:
    err = translate(exc)
    text = str(err) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."
