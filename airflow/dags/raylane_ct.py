"""Raylane continuous training as an Airflow 3 DAG: monitor -> branch -> retrain -> report.

Each step is a Ray job submitted to a Ray cluster with Ray's Job Submission SDK
(``ray.job_submission.JobSubmissionClient``); the task waits for it and prints the job's log as
it grows, so the drift report and the CT summary show in the task log. The jobs run
``ray_jobs.continuous_training`` from this repository (uploaded as the job's working_dir, with
the excludes of ``ray_jobs/runtime_env.yaml``) on the cluster's own Python and raylane install.

The Ray cluster is the deployment's, never the trigger's: the Airflow Connection ``raylane_ray``
(or ``$RAYLANE_RAY_CONN_ID``), e.g. ``AIRFLOW_CONN_RAYLANE_RAY='{"conn_type": "http", "host":
"ray-head", "port": 8265, "password": "<token>"}'``: host, port and ``schema`` (http/https) give
the dashboard URL (or ``extra.address`` whole); the password is the cluster's token (Ray 2.60
clusters use token auth), else the Variable ``raylane_ray_auth_token``. The token goes to Ray as
an ``Authorization: Bearer`` header; no file in the worker's home is read.

Trigger params (constrained: Airflow rejects a run whose conf does not match):

    config        one of tune_configs/*.yaml            default $RAYLANE_CT_CONFIG
    predictions   absolute path or s3/gs/file URI, or "" default $RAYLANE_PREDICTION_LOG
    new_data      same                                   default $RAYLANE_NEW_DATA_URI
    labels        same                                   default $RAYLANE_LABELS_URI
    overrides     list of "key=value", keys from OVERRIDE_KEYS only (the search's size/strategy)
    force         retrain without asking the monitor

Overrides that name places (MLflow tracking URI, result storage) are the deployment's: the
worker's ``$RAYLANE_CT_SET`` ("key=value key=value"), applied before the trigger's.

This file imports nothing from raylane: Airflow lives in its own environment
(airflow/requirements.txt, ``make airflow-install``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from pathlib import Path

import pendulum
import yaml
from airflow.sdk import Connection, Param, TriggerRule, Variable, dag, task

REPO = Path(os.environ.get("RAYLANE_REPO", Path(__file__).resolve().parents[2]))
RESULT_MARKER = "raylane-ct-result: "  # raylane.continuous.RESULT_MARKER
POLL_S = 2.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
RAY_CONN_ID = os.environ.get("RAYLANE_RAY_CONN_ID", "raylane_ray")
TOKEN_VARIABLE = "raylane_ray_auth_token"

CONFIGS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "tune_configs").glob("*.yaml"))
# What a trigger may change: how big and how the search is, never where things are read or
# written.
OVERRIDE_KEYS = ("tune.num_samples", "tune.max_concurrent_trials", "tune.search_alg",
                 "tune.scheduler.type", "tune.time_budget_s")
OVERRIDE_PATTERN = ("^(" + "|".join(re.escape(k) for k in OVERRIDE_KEYS)
                    + r")=[A-Za-z0-9_.+-]{1,64}$")
# Empty, an absolute path, or a URI of a storage the jobs read; no whitespace, no leading '-'.
DATA_PATTERN = r"^$|^/[^\s]*$|^(s3|gs|file)://[^\s]+$"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _default_config() -> str:
    configured = _env("RAYLANE_CT_CONFIG", "tune_configs/credit_xgboost.yaml")
    return configured if configured in CONFIGS else CONFIGS[0]


def check_params(params: dict) -> None:
    """The trigger's params again, as the tasks use them (Airflow checks them at trigger time;
    a task run by hand gets the same clear error)."""
    if params["config"] not in CONFIGS:
        raise ValueError(f"param 'config': expected one of {CONFIGS}, got {params['config']!r}")
    for key in ("predictions", "new_data", "labels"):
        if not re.fullmatch(DATA_PATTERN, params.get(key) or ""):
            raise ValueError(f"param {key!r}: expected an absolute path or an s3://, gs:// or "
                             f"file:// URI, got {params[key]!r}")
    for item in params.get("overrides") or []:
        if not re.fullmatch(OVERRIDE_PATTERN, item):
            raise ValueError(f"param 'overrides': {item!r} is not key=value with a key from "
                             f"{list(OVERRIDE_KEYS)}")


def ray_cluster(conn_id: str = RAY_CONN_ID) -> tuple[str, dict[str, str]]:
    """The Ray dashboard URL and the request headers (the token) from the Airflow Connection."""
    conn = Connection.get(conn_id)
    address = conn.extra_dejson.get("address")
    if not address:
        if not conn.host:
            raise ValueError(f"Airflow connection {conn_id!r}: no host (the Ray dashboard's)")
        address = f"{conn.schema or 'http'}://{conn.host}:{conn.port or 8265}"
    token = conn.password or Variable.get(TOKEN_VARIABLE, default=None)
    return address, ({"Authorization": f"Bearer {token}"} if token else {})


def _runtime_env() -> dict:
    """The repository as the job's working_dir, with the README's `ray job submit` excludes."""
    spec = yaml.safe_load((REPO / "ray_jobs" / "runtime_env.yaml").read_text())
    return {"working_dir": str(REPO), "excludes": spec.get("excludes", []),
            "env_vars": spec.get("env_vars", {})}


def _entrypoint(params: dict, *extra: str) -> str:
    argv = ["python", "-m", "ray_jobs.continuous_training", "--config", params["config"]]
    for option, key in (("--predictions", "predictions"), ("--new-data", "new_data"),
                        ("--labels", "labels")):
        if params.get(key):
            argv += [option, params[key]]
    for item in [*shlex.split(_env("RAYLANE_CT_SET")), *(params.get("overrides") or [])]:
        argv += ["--set", item]
    return shlex.join([*argv, *extra])


def run_ray_job(entrypoint: str, timeout_s: float = 3 * 3600) -> str:
    """Submit ``entrypoint``, print its log as it grows, return the whole log; raise if the job
    does not succeed."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    address, headers = ray_cluster()
    client = JobSubmissionClient(address, headers=headers)
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=_runtime_env())
    print(f"submitted Ray job {job_id} to {address}: {entrypoint}", flush=True)
    printed, deadline = 0, time.monotonic() + timeout_s
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > printed:
            print(logs[printed:], end="", flush=True)
            printed = len(logs)
        if str(status) in TERMINAL or status in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                 JobStatus.STOPPED):
            break
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise TimeoutError(f"Ray job {job_id} still running after {timeout_s:.0f} s; stopped")
        time.sleep(POLL_S)
    print(f"\nRay job {job_id}: {status}", flush=True)
    if status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"Ray job {job_id} ended {status}")
    return logs


def ct_result(logs: str) -> dict:
    """The machine-readable result line the continuous-training job prints last."""
    for line in reversed(logs.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise RuntimeError("the job's log has no continuous-training result line")


def report_lines(decided: dict, trained: dict | None) -> list[str]:
    lines = ["=" * 72, "Raylane continuous training report (Airflow)", "=" * 72,
             f"monitor decision   {decided['decision']} ({'; '.join(decided['reasons'])})",
             f"monitoring run     {decided['monitoring_run_id']}"]
    if decided.get("report"):
        lines.append("drift report       " + json.dumps(decided["report"], default=str)[:4000])
    if trained:
        scores = trained.get("scores", {})
        lines += [f"CT run             {trained['run_id']}",
                  f"training run       {trained['training_run_id']}",
                  f"model version      {trained['model_version']}",
                  f"judged             challenger {scores.get('raylane.judging.challenger')} vs "
                  f"champion {scores.get('raylane.judging.champion')} on "
                  f"{scores.get('raylane.judging.rows')} rows",
                  f"decision           {'promoted' if trained['promoted'] else 'not promoted'}"]
        lines += [f"  - {r}" for r in trained.get("reasons", [])]
    else:
        lines.append("retrain            skipped")
    return lines


PATH_PARAM = {"type": "string", "pattern": DATA_PATTERN}


@dag(
    dag_id="raylane_ct",
    description="Raylane continuous training: monitor -> branch -> retrain -> report on Ray",
    schedule="0 */6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "config": Param(_default_config(), type="string", enum=CONFIGS),
        "predictions": Param(_env("RAYLANE_PREDICTION_LOG"), **PATH_PARAM),
        "new_data": Param(_env("RAYLANE_NEW_DATA_URI"), **PATH_PARAM),
        "labels": Param(_env("RAYLANE_LABELS_URI"), **PATH_PARAM),
        "overrides": Param([], type="array", maxItems=len(OVERRIDE_KEYS),
                           items={"type": "string", "pattern": OVERRIDE_PATTERN}),
        "force": Param(False, type="boolean"),
    },
    tags=["raylane"],
)
def raylane_ct():
    @task
    def monitor(params: dict | None = None) -> dict:
        """The monitor's decision (``--monitor-only``; with ``force``, just 'retrain')."""
        check_params(params)
        extra = ["--monitor-only"] + (["--force"] if params["force"] else [])
        result = ct_result(run_ray_job(_entrypoint(params, *extra)))
        decision = "retrain" if params["force"] else (result.get("report") or {}).get("decision")
        return {"decision": decision or "none",
                "monitoring_run_id": result.get("monitoring_run_id"),
                "report": result.get("report"), "reasons": result.get("reasons", []),
                "monitor_ct_run_id": result.get("run_id")}

    @task.branch
    def branch(decided: dict) -> str:
        print(f"monitor decided {decided['decision']!r}: {decided['reasons']}")
        return "retrain" if decided["decision"] == "retrain" else "report"

    @task
    def retrain(decided: dict, params: dict | None = None) -> dict:
        check_params(params)
        extra = ["--force"] if params["force"] else [
            "--monitoring-run-id", decided["monitoring_run_id"]]
        return ct_result(run_ray_job(_entrypoint(params, *extra)))

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def report(decided: dict, ti=None) -> None:
        print("\n".join(report_lines(decided, ti.xcom_pull(task_ids="retrain"))))

    decided = monitor()
    trained = retrain(decided)
    reported = report(decided)
    branch(decided) >> [trained, reported]
    trained >> reported


raylane_ct()
