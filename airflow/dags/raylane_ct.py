"""Raylane continuous training as an Airflow DAG: monitor -> branch -> retrain -> report.

Each step is a Ray job submitted to a Ray cluster with Ray's Job Submission SDK
(``ray.job_submission.JobSubmissionClient``); the task waits for it and prints the job's log as
it grows, so the drift report and the CT summary show in the task log. The jobs run
``ray_jobs.continuous_training`` from this repository (uploaded as the job's working_dir, with
the excludes of ``ray_jobs/runtime_env.yaml``) on the cluster's own Python and raylane install.

Settings (DAG params; defaults from the environment of the Airflow worker):

    ray_address   $RAYLANE_RAY_ADDRESS    Ray dashboard URL, e.g. http://127.0.0.1:8265
    config        $RAYLANE_CT_CONFIG      pipeline config, relative to the repo
    predictions   $RAYLANE_PREDICTION_LOG prediction log (the monitor's input)
    new_data      $RAYLANE_NEW_DATA_URI   newly labelled rows
    labels        $RAYLANE_LABELS_URI     labels for logged predictions (prediction_id + label)
    overrides     $RAYLANE_CT_SET         config overrides, "key=value key=value"
    force         false                   retrain without asking the monitor

Ray 2.60 clusters use token auth: run Airflow with RAY_AUTH_MODE=token (and the cluster's token
in RAY_AUTH_TOKEN or ~/.ray/auth_token). This file imports nothing from raylane: Airflow lives
in its own environment (airflow/requirements.txt, ``make airflow-install``).
"""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pendulum
import yaml
from airflow.models.param import Param
from airflow.operators.python import BranchPythonOperator, PythonOperator
from airflow.utils.trigger_rule import TriggerRule

from airflow import DAG

REPO = Path(os.environ.get("RAYLANE_REPO", Path(__file__).resolve().parents[2]))
RESULT_MARKER = "raylane-ct-result: "  # raylane.continuous.RESULT_MARKER
POLL_S = 2.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


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
    for item in shlex.split(params.get("overrides") or ""):
        argv += ["--set", item]
    return shlex.join([*argv, *extra])


def run_ray_job(address: str, entrypoint: str, timeout_s: float = 3 * 3600) -> str:
    """Submit ``entrypoint``, print its log as it grows, return the whole log; raise if the job
    does not succeed."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
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


def monitor(params: dict, **_) -> dict:
    """The monitor's decision (``--monitor-only``; with ``force``, just 'retrain')."""
    extra = ["--monitor-only"] + (["--force"] if params["force"] else [])
    result = ct_result(run_ray_job(params["ray_address"], _entrypoint(params, *extra)))
    decision = "retrain" if params["force"] else (result.get("report") or {}).get("decision")
    return {"decision": decision or "none", "monitoring_run_id": result.get("monitoring_run_id"),
            "report": result.get("report"), "reasons": result.get("reasons", []),
            "monitor_ct_run_id": result.get("run_id")}


def branch(ti, **_) -> str:
    decided = ti.xcom_pull(task_ids="monitor")
    print(f"monitor decided {decided['decision']!r}: {decided['reasons']}")
    return "retrain" if decided["decision"] == "retrain" else "report"


def retrain(params: dict, ti, **_) -> dict:
    decided = ti.xcom_pull(task_ids="monitor")
    extra = ["--force"] if params["force"] else [
        "--monitoring-run-id", decided["monitoring_run_id"]]
    return ct_result(run_ray_job(params["ray_address"], _entrypoint(params, *extra)))


def report(ti, **_) -> None:
    decided = ti.xcom_pull(task_ids="monitor")
    trained = ti.xcom_pull(task_ids="retrain")
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
    print("\n".join(lines))


with DAG(
    dag_id="raylane_ct",
    description="Raylane continuous training: monitor -> branch -> retrain -> report on Ray",
    schedule="0 */6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={
        "ray_address": Param(_env("RAYLANE_RAY_ADDRESS", "http://127.0.0.1:8265"), type="string"),
        "config": Param(_env("RAYLANE_CT_CONFIG", "tune_configs/credit_xgboost.yaml"),
                        type="string"),
        "predictions": Param(_env("RAYLANE_PREDICTION_LOG"), type="string"),
        "new_data": Param(_env("RAYLANE_NEW_DATA_URI"), type="string"),
        "labels": Param(_env("RAYLANE_LABELS_URI"), type="string"),
        "overrides": Param(_env("RAYLANE_CT_SET"), type="string"),
        "force": Param(False, type="boolean"),
    },
    tags=["raylane"],
) as dag:
    monitor_task = PythonOperator(task_id="monitor", python_callable=monitor)
    branch_task = BranchPythonOperator(task_id="branch", python_callable=branch)
    retrain_task = PythonOperator(task_id="retrain", python_callable=retrain)
    report_task = PythonOperator(task_id="report", python_callable=report,
                                 trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    monitor_task >> branch_task >> [retrain_task, report_task]
    retrain_task >> report_task
