"""Faults during the search, on real processes: an `mlflow server` restarted while the training
job searches (no finished trial is lost), and a worker node of a two-node Ray cluster SIGKILLed
while a trial runs on it (the trial is retried elsewhere, ``tune.max_failures``).

Both act at a hold point (``RAYLANE_TEST_HOLD``, see ``raylane.training.tuning.StopCallback``): the
driver waits at a known trial result, and so does the trial that reported it, so the fault
lands at a known place in the search, not after a sleep.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from support.jobs import Job, job_args, ray_tmpdir, runs
from support.mlflow_server import MlflowServer
from support.multinode import (
    add_worker,
    cluster_view,
    kill_node,
    node_processes,
    require_multinode_host,
    trial_actors,
    two_node_cluster,
)
from support.paths import ROOT

pytestmark = pytest.mark.slow


def wait_for(condition, what: str, timeout: float = 180, poll: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def tune_trials(storage: Path) -> list:
    """The trials of the one search under ``storage``, as Tune saved them (status, failures,
    every result in order)."""
    from ray.tune import ExperimentAnalysis

    [run_dir] = [p for p in storage.iterdir() if p.is_dir()]
    return ExperimentAnalysis(str(run_dir)).trials


def tune_results(storage: Path) -> dict[str, list[dict]]:
    """{trial id: its results in order}, from each trial's ``result.json``."""
    [run_dir] = [p for p in storage.iterdir() if p.is_dir()]
    out = {}
    for path in run_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        out[rows[0]["trial_id"]] = rows
    return out


def trial_runs_by_id(client: MlflowClient, experiment: str, trial_ids) -> dict:
    """{trial id: its MLflow child run}; each trial must have exactly one."""
    found = runs(client, experiment, "trial")
    by_id = {}
    for trial_id in trial_ids:
        mine = [r for r in found if r.data.tags["trial_name"].endswith(f"_{trial_id}")]
        assert len(mine) == 1, (trial_id, [r.data.tags["trial_name"] for r in found])
        by_id[trial_id] = mine[0]
    assert len(found) == len(by_id), "child runs that are no trial of the search"
    return by_id


# ------------------------------------------------------------ MLflow restarted during a search


def test_mlflow_restarted_during_a_search_loses_no_finished_trial(tmp_path):
    """Four trials one after another against a real `mlflow server`. The server is stopped once
    the first trial's child run is finished in MLflow, the second trial runs and finishes while
    it is down, the server comes back (same port and store) while the third trial runs: the job
    exits 0, every trial Tune finished is a FINISHED child run with every result Tune recorded,
    and the model is registered."""
    home = tmp_path / "mlflow"
    home.mkdir()
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    storage = tmp_path / "ray_results"
    model = "credit-restart"
    server = MlflowServer(home)
    server.start()
    try:
        args = job_args(tmp_path, server.url, "restart", "--set", "tune.num_samples=4",
                        "--set", f"mlflow.registered_model={model}")
        client = MlflowClient(server.url, registry_uri=server.url)
        with ray_tmpdir() as ray_dir:
            job = Job(args, tmp_path, tmp_path / "job.log", hold="trials_done_1,trials_done_2",
                      hold_dir=hold_dir, ray_dir=ray_dir,
                      # MLflow's client would retry a refused call for minutes on its own and
                      # hide the outage; the job's trial logging (buffer, backoff) is under test
                      env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                           "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"})
            try:
                job.wait_reached("trials_done_1")  # trial 2 reported its first result
                wait_for(lambda: [r.info.status for r in runs(client, "restart", "trial")
                                  if r.info.status == "FINISHED"] == ["FINISHED"],
                         "the first trial's finished child run")
                server.stop()
                job.release("trials_done_1")
                job.wait_reached("trials_done_2")  # trial 2 finished while MLflow was down
                wait_for(lambda: "is unreachable" in job.text(), "the job to notice the outage")
                server.start()
                job.release("trials_done_2")
                code = job.wait(timeout=600)
            finally:
                if job.proc.poll() is None:  # a step above failed
                    job.proc.kill()
                    job.wait(timeout=60)
        log = job.text()
        assert code == 0, log[-4000:]
        assert re.search(r"trials\s+4 \(0 errored\)", log), log[-4000:]

        results = tune_results(storage)
        assert len(results) == 4
        assert {t.status for t in tune_trials(storage)} == {"TERMINATED"}
        by_id = trial_runs_by_id(client, "restart", results)
        for trial_id, rows in results.items():
            run = by_id[trial_id]
            assert run.info.status == "FINISHED", (trial_id, run.info.status)
            history = client.get_metric_history(run.info.run_id, "valid_roc_auc")
            assert sorted((m.step, m.value) for m in history) == [
                (r["training_iteration"], pytest.approx(r["valid_roc_auc"])) for r in rows]
        [parent] = runs(client, "restart")
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["raylane.trial_logging"] == "complete"
        assert parent.data.metrics["trials.unlogged_results"] == 0
        assert parent.data.metrics["trials.count"] == 4
        version = parent.data.tags["raylane.model_version"]
        assert client.get_model_version(model, version).run_id == parent.info.run_id
    finally:
        server.stop()


# -------------------------------------------------- a worker node killed on the two-node cluster

# Three trials one after another (which one runs when is known), each long enough to report
# four times (it waits at the held one).
SEARCH = ["tune.num_samples=3", "tune.max_concurrent_trials=1", "tune.search_alg=random",
          "tune.scheduler.type=fifo", "model.params.n_estimators=40",
          "model.search_space.n_estimators=40", "model.report_every=10",
          "mlflow.experiment=nodekill", "mlflow.registered_model=credit-nodekill"]


@pytest.fixture()
def cluster(tmp_path, mlflow_server):
    """A two-node cluster of its own (the test kills its worker node). The GCS declares a node
    dead after 2 missed health checks 1 s apart instead of Ray's default ~30 s: only how soon
    the loss is noticed changes."""
    require_multinode_host()
    scratch = tmp_path / "nodes"
    scratch.mkdir()
    with two_node_cluster(mlflow_server, scratch, system_config={
            "health_check_period_ms": 1000, "health_check_failure_threshold": 2}) as nodes:
        yield nodes


def test_worker_node_killed_mid_search_its_trial_is_retried(cluster, mlflow_server, tmp_path):
    """The job submitted to the cluster holds at the second trial's first result (the first
    trial finished): that trial is running on the worker node. The node's raylet and all its
    processes are SIGKILLed, a new worker node joins (as KubeRay replaces a pod), the job goes
    on: the killed trial fails once and is retried on the new node, all three trials end
    TERMINATED, the job succeeds and registers the model."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    dashboard = cluster["dashboard"]
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    storage = tmp_path / "ray_results"
    runtime_env = yaml.safe_load((ROOT / "ray_jobs" / "runtime_env.yaml").read_text())
    runtime_env.update(working_dir=str(ROOT), env_vars={
        "RAYLANE_TEST_HOLD": "trial", "RAYLANE_TEST_HOLD_DIR": str(hold_dir)})
    entrypoint = " ".join([
        "python", "-m", "ray_jobs.train_pipeline", "--config", "tune_configs/credit_xgboost.yaml",
        *[a for item in [*SEARCH, f"tune.storage_path={storage}"] for a in ("--set", item)]])
    jobs = JobSubmissionClient(dashboard)
    submission_id = f"raylane-nodekill-{uuid.uuid4().hex[:8]}"
    for attempt in range(20):  # the dashboard answers before its job agent has registered
        try:
            jobs.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                            submission_id=submission_id)
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or attempt == 19:
                raise
            time.sleep(3)

    def job_logs() -> str:
        return jobs.get_job_logs(submission_id)

    def finished() -> bool:
        return jobs.get_job_status(submission_id).is_terminal()

    wait_for(lambda: (hold_dir / "trial.reached").exists() or finished(),
             "the job to hold at the second trial", timeout=300, poll=0.5)
    assert (hold_dir / "trial.reached").exists(), job_logs()[-4000:]

    # the held trial's process, as its result named it (Tune reuses one actor for the trials)
    held = json.loads((hold_dir / "trial.reached").read_text())
    assert held["pid"] in node_processes(cluster["worker_node"]), (held, cluster_view(dashboard))
    killed = kill_node(cluster["worker_node"])
    assert held["pid"] in killed
    cluster["cluster"].remove_node(cluster["worker_node"], allow_graceful=False)  # bookkeeping
    replacement = add_worker(cluster["cluster"], cluster["env"], cluster["disks"] / "worker2")
    (hold_dir / "trial.go").touch()

    wait_for(finished, "the job to end", timeout=600, poll=1)
    logs = job_logs()
    assert jobs.get_job_status(submission_id) == JobStatus.SUCCEEDED, logs[-6000:]
    assert re.search(r"trials\s+3 \(0 errored\)", logs), logs[-4000:]

    trials = sorted(tune_trials(storage), key=lambda t: t.trial_id)
    assert [t.status for t in trials] == ["TERMINATED"] * 3
    # the second trial (ids are numbered in order) was the one on the killed node: retried once
    assert [t.num_failures for t in trials] == [0, 1, 0], [t.trial_id for t in trials]
    # its first attempt died with the node; the retry and the third trial ran on the new node
    trials_run = trial_actors(dashboard)
    dead = [a for a in trials_run if a.state == "DEAD"]
    assert held["pid"] in {a.pid for a in dead}, cluster_view(dashboard)
    assert {a.node_id for a in trials_run} <= {cluster["worker"], replacement.node_id}
    assert replacement.node_id in {a.node_id for a in trials_run}, cluster_view(dashboard)

    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    by_id = trial_runs_by_id(client, "nodekill", [t.trial_id for t in trials])
    assert {r.info.status for r in by_id.values()} == {"FINISHED"}
    for run in by_id.values():  # the retried trial's run carries its full, second attempt
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "valid_roc_auc")]
        assert max(steps) == 4, steps
    version = client.get_model_version_by_alias("credit-nodekill", "champion")
    parent = client.get_run(version.run_id)
    assert parent.data.tags["raylane.model_version"] == version.version
    assert parent.data.metrics["trials.errored"] == 0
    assert parent.data.metrics["trials.count"] == 3
