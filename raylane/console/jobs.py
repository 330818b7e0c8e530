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
from raylane.tracking.tags import (
    DECISION,
    FAMILY,
    GATES,
    JOB_BY,
    JOB_CONFIG,
    JOB_STARTED_BY,
    MODEL_VERSION,
    TASK,
)

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


def parse_overrides(text: str) -> list[str]:
    """``key=value`` overrides, one per line (blank lines and ``# comments`` skipped; a leading
    ``--set`` is allowed). Raises ConfigError for a line that is not ``key=value``."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip().removeprefix("--set").strip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not sep or not key.strip() or " " in key.strip():
            raise ConfigError(f"override line {number}: expected key=value, got {raw.strip()!r}")
        out.append(line)
    return out


def with_tracking(overrides: list[str], tracking_uri: str) -> list[str]:
    """The overrides plus ``mlflow.tracking_uri`` = the console's store when none is given and
    the console's store is one a job on the cluster can use (a server or an absolute path)."""
    if any(o.split("=", 1)[0].strip() == "mlflow.tracking_uri" for o in overrides):
        return overrides
    if tracking_uri.startswith(("http://", "https://", "sqlite:////")):
        return [*overrides, f"mlflow.tracking_uri={tracking_uri}"]
    return overrides


def validate(config: Path, overrides: list[str]) -> PipelineConfig:
    """The config as the job will see it (raises ConfigError with the bad key)."""
    return load_config(config, overrides)


# ---------------------------------------------------------------- submission


def entrypoint(config: Path, overrides: list[str], root: Path = ROOT) -> str:
    """The job's command line; the config relative to the working_dir when it lies inside."""
    try:
        path = str(config.resolve().relative_to(root.resolve()))
    except ValueError:
        path = str(config.resolve())
    args = ["python", "-m", "ray_jobs.train_pipeline", "--config", path]
    for override in overrides:
        args += ["--set", override]
    return shlex.join(args)


def runtime_env(root: Path = ROOT) -> dict:
    """This repository as the job's working_dir with ``ray_jobs/runtime_env.yaml``'s excludes
    and environment (what ``ray job submit --working-dir . --runtime-env ...`` sends)."""
    spec = yaml.safe_load((root / "ray_jobs" / "runtime_env.yaml").read_text()) or {}
    return {"working_dir": str(root), **spec}


def auth_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    """The cluster token as Ray's clients send it (Ray 2.60 clusters use token auth):
    ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    env = os.environ if env is None else env
    token = env.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(env.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def jobs_client(address: str):
    """A JobSubmissionClient for Ray's dashboard at ``address`` (raises RayUnreachable)."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as exc:
        raise RayUnreachable(_short(exc)) from None


def submit(address: str, config: Path, overrides: list[str], who: str,
           root: Path = ROOT) -> str:
    """Validate, then submit the training job; its id. ConfigError before anything is sent."""
    validate(config, overrides)
    client = jobs_client(address)
    for attempt in range(AGENT_WAIT_TRIES):
        try:
            return client.submit_job(
                entrypoint=entrypoint(config, overrides, root), runtime_env=runtime_env(root),
                metadata={JOB_STARTED_BY: "train", JOB_CONFIG: config.name,
                          JOB_BY: who})
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
