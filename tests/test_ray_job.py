"""The job as users start it: `ray job submit` to a running cluster, and an interrupted search
resumed with --resume."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import BIN, CREDIT_CSV, ROOT, free_port, wait_http
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

FAST = [
    "--set", "tune.num_samples=3", "--set", "tune.search_alg=random",
    "--set", "model.search_space.n_estimators={type: qrandint, lower: 20, upper: 60, q: 10}",
]


@pytest.fixture()
def ray_head(tmp_path):
    """A real `ray start --head` in its own process group, stopped by the test alone.

    Its own temp dir (short: unix socket paths are capped): `ray start` writes the cluster's
    address to ``<temp dir>/ray_current_cluster``, and a SIGTERM'd `ray start --block` never
    removes it. In the default /tmp/ray it would send a later `ray.init()` / `serve run` to
    this dead cluster."""
    port, dash = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rl-job-", dir="/tmp")
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp_dir}",
         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", f"--ray-client-server-port={free_port()}",
         # own agent ports: another Ray on this machine may hold the defaults (52365)
         f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}"],
        stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True, cwd=tmp_path,
        # as with an activated virtualenv: the job's `python` is the one Ray runs on
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"},
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_http(f"{url}/api/version", timeout=120)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_pipeline(ray_head, mlflow_server, tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    submit = [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(ROOT),
         "--runtime-env", str(ROOT / "ray_jobs" / "runtime_env.yaml"), "--",
         "python", "-m", "ray_jobs.train_pipeline", "--config", "tune_configs/credit_xgboost.yaml",
         *FAST, "--set", f"mlflow.tracking_uri={mlflow_server}",
         "--set", "mlflow.registered_model=credit-job",
         "--set", f"tune.storage_path={tmp_path / 'ray_results'}"]
    for _ in range(20):  # the dashboard answers before its job agent has registered
        out = subprocess.run(submit, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        log = out.stdout + out.stderr
        if "No available agent" not in log:
            break
        time.sleep(3)
    assert out.returncode == 0, log[-4000:]
    assert "Raylane training summary" in log
    assert re.search(r"succeeded", log)
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    assert client.get_model_version_by_alias("credit-job", "champion") is not None


@pytest.mark.parametrize("respect_gitignore", [True, False])
def test_working_dir_upload_stays_small(tmp_path, respect_gitignore):
    """The package `ray job submit --working-dir .` uploads, built by Ray's own packager with
    ray_jobs/runtime_env.yaml's excludes: no .git, environments or run output, even where a
    cluster ignores .gitignore (RAY_RUNTIME_ENV_IGNORE_GITIGNORE)."""
    import zipfile

    import yaml
    from ray._private.runtime_env.packaging import create_package

    excludes = yaml.safe_load((ROOT / "ray_jobs" / "runtime_env.yaml").read_text())["excludes"]
    # run output as a user's checkout has it (.venv is already there after `make install`)
    output = ROOT / "ray_results" / f"size-check-{os.getpid()}"
    output.mkdir(parents=True)
    (output / "big.bin").write_bytes(os.urandom(6 * 2**20))
    try:
        package = tmp_path / "pkg.zip"
        create_package(str(ROOT), package, include_gitignore=respect_gitignore,
                       excludes=excludes)
        names = zipfile.ZipFile(package).namelist()
    finally:
        shutil.rmtree(output)
    size = package.stat().st_size
    assert size < 5 * 2**20, f"working_dir package is {size / 2**20:.1f} MiB"
    assert not [n for n in names if n.startswith((".git/", ".venv/", "ray_results/", "mlruns/"))]
    assert "raylane/pipeline.py" in names and "tune_configs/credit_xgboost.yaml" in names


def _finished_trials(client: MlflowClient, experiment: str) -> dict[str, str]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], "tags.`raylane.role` = 'trial'")
    return {r.data.tags["trial_name"]: r.info.run_id for r in runs
            if r.info.status == "FINISHED"}


def test_interrupted_search_resumes_keeping_finished_trials(tmp_path, sqlite_uri):
    args = [sys.executable, "-m", "ray_jobs.train_pipeline", "--config",
            str(ROOT / "tune_configs" / "credit_xgboost.yaml"),
            "--set", f"data.path={CREDIT_CSV}", "--set", "tune.num_samples=3",
            "--set", "tune.max_concurrent_trials=1", "--set", "tune.search_alg=random",
            "--set", "tune.scheduler.type=fifo", "--set", f"mlflow.tracking_uri={sqlite_uri}",
            "--set", "mlflow.experiment=resume", "--set", "model.params.n_estimators=150",
            "--set", "model.search_space.n_estimators=150",
            "--set", f"tune.storage_path={tmp_path / 'ray_results'}"]
    client = MlflowClient(sqlite_uri)
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115
    first = subprocess.Popen(args, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if len(_finished_trials(client, "resume")) >= 1:
            break
        time.sleep(1)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    first.send_signal(signal.SIGINT)
    assert first.wait(timeout=120) == 130, (tmp_path / "first.log").read_text()[-3000:]
    log.close()
    assert "Run the same command with --resume" in (tmp_path / "first.log").read_text()
    done_before = _finished_trials(client, "resume")
    assert 1 <= len(done_before) < 3
    assert client.search_model_versions("name='credit'") == []  # nothing registered yet

    second = subprocess.run([*args, "--resume"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert re.search(r"trials\s+3 \(0 errored\)", second.stdout)
    done_after = _finished_trials(client, "resume")
    # the trials finished before the interrupt were kept, not run again
    for name, run_id in done_before.items():
        assert done_after[name] == run_id
    exp = client.get_experiment_by_name("resume")
    all_trial_runs = client.search_runs([exp.experiment_id], "tags.`raylane.role` = 'trial'")
    names = [r.data.tags["trial_name"] for r in all_trial_runs]
    for name in done_before:
        assert names.count(name) == 1
    # one parent run for the whole job, interrupted and resumed
    parents = client.search_runs([exp.experiment_id], "tags.`raylane.model_version` = '1'")
    assert len(parents) == 1
    assert {r.data.tags["mlflow.parentRunId"] for r in all_trial_runs} == {parents[0].info.run_id}
    assert Path(tmp_path / "ray_results").exists()
