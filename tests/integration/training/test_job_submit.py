"""The job as users start it: `ray job submit` to a running cluster, and an interrupted search
resumed with --resume (stops at other stages: test_stops.py)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from mlflow import MlflowClient
from support.jobs import (
    Job,
    assert_clean_stop,
    job_args,
    ray_job_submit,
    ray_tmpdir,
    run_job,
    runs,
)
from support.paths import BIN, ROOT

pytestmark = pytest.mark.slow

FAST = [
    "--set", "tune.num_samples=3", "--set", "tune.search_alg=random",
    "--set", "model.search_space.n_estimators={type: qrandint, lower: 20, upper: 60, q: 10}",
]


def test_ray_job_submit_runs_the_pipeline(ray_head, mlflow_server, tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    submit = [str(BIN / "ray"), "job", "submit", "--address", ray_head, "--working-dir", str(ROOT),
         "--runtime-env", str(ROOT / "ray_jobs" / "runtime_env.yaml"), "--",
         "python", "-m", "ray_jobs.train_pipeline", "--config", "tune_configs/credit_xgboost.yaml",
         *FAST, "--set", f"mlflow.tracking_uri={mlflow_server}",
         "--set", "mlflow.registered_model=credit-job",
         "--set", f"tune.storage_path={tmp_path / 'ray_results'}"]
    out, log = ray_job_submit(submit, tmp_path, env)
    assert out.returncode == 0, log[-4000:]
    assert "Raylane training summary" in log
    assert re.search(r"succeeded", log)
    client = MlflowClient(mlflow_server, registry_uri=mlflow_server)
    assert client.get_model_version_by_alias("credit-job", "champion") is not None


def submit(address: str, cwd, *job: str) -> tuple[subprocess.CompletedProcess, str]:
    """`ray job submit` of the training job as the README's cluster example does it."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(ROOT),
           "--runtime-env", str(ROOT / "ray_jobs" / "runtime_env.yaml"), "--",
           "python", "-m", "ray_jobs.train_pipeline", "--config",
           "tune_configs/credit_xgboost.yaml", *FAST, *job]
    return ray_job_submit(cmd, cwd, env)


def test_a_submitted_job_keeps_its_store_outside_rays_working_dir(ray_head, tmp_path):
    """Without a tracking URI the store would be written into Ray's temporary copy of the
    working dir: the job refuses before any work, saying how to set it. The README's example
    (an absolute SQLite path) keeps the runs and the model outside it."""
    from raylane.model.store import load_registered_model
    from raylane.tracking.experiments import ray_package_dir

    assert "MLFLOW_TRACKING_URI" not in os.environ
    started = time.monotonic()
    out, log = submit(ray_head, tmp_path,
                      "--set", f"tune.storage_path={tmp_path / 'ray_results'}")
    assert out.returncode != 0, log[-4000:]
    assert "inside the working directory Ray uploaded" in log and "MLFLOW_TRACKING_URI" in log
    assert "Raylane training summary" not in log and "Trial status" not in log, log[-4000:]
    assert time.monotonic() - started < 120

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out, log = submit(ray_head, tmp_path, "--set", f"mlflow.tracking_uri={uri}",
                      "--set", "mlflow.registered_model=credit-readme",
                      "--set", f"tune.storage_path={tmp_path / 'ray_results'}")
    assert out.returncode == 0, log[-4000:]
    client = MlflowClient(uri, registry_uri=uri)
    version = client.get_model_version_by_alias("credit-readme", "champion")
    source = client.get_model_version_download_uri("credit-readme", version.version)
    assert ray_package_dir(source.removeprefix("file://")) is None, source
    assert source.removeprefix("file://").startswith(str(tmp_path)), source
    assert load_registered_model("models:/credit-readme@champion", uri).onnx_bytes
    experiment = client.get_experiment_by_name("credit")
    assert experiment.artifact_location.removeprefix("file://") == \
        str(tmp_path / "mlruns" / "credit"), experiment.artifact_location


@pytest.mark.parametrize("respect_gitignore", [True, False])
def test_working_dir_upload_stays_small(tmp_path, respect_gitignore):
    """The package `ray job submit --working-dir .` uploads, built by Ray's own packager with
    ray_jobs/runtime_env.yaml's excludes: no .git, environments or run output, even where a
    cluster ignores .gitignore (RAY_RUNTIME_ENV_IGNORE_GITIGNORE)."""
    import zipfile

    import yaml
    from ray._private.runtime_env.packaging import create_package

    excludes = yaml.safe_load((ROOT / "ray_jobs" / "runtime_env.yaml").read_text())["excludes"]
    # run output and a benchmark peer's environment as a user's checkout has them (.venv is
    # already there after `make install`)
    output = ROOT / "ray_results" / f"size-check-{os.getpid()}"
    peer_env = ROOT / f".venv-size-check-{os.getpid()}"
    for planted in (output, peer_env):
        planted.mkdir(parents=True)
        (planted / "big.bin").write_bytes(os.urandom(6 * 2**20))
    try:
        package = tmp_path / "pkg.zip"
        create_package(str(ROOT), package, include_gitignore=respect_gitignore,
                       excludes=excludes)
        names = zipfile.ZipFile(package).namelist()
    finally:
        shutil.rmtree(output)
        shutil.rmtree(peer_env)
    size = package.stat().st_size
    assert size < 5 * 2**20, f"working_dir package is {size / 2**20:.1f} MiB"
    assert not [n for n in names if n.startswith((".git/", ".venv", "ray_results/", "mlruns/"))]
    assert "raylane/training/job.py" in names and "tune_configs/credit_xgboost.yaml" in names


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_search_resumes_keeping_finished_trials(tmp_path, sqlite_uri, sig):
    """Stopped inside a running search (held at the second trial's first result, one trial
    finished): exit 128 + signal, one line, the parent and the open trial run KILLED, Ray shut
    down; --resume keeps the finished trial and finishes under the same parent run."""
    args = job_args(tmp_path, sqlite_uri, "resume")
    client = MlflowClient(sqlite_uri)
    code = 128 + sig
    with ray_tmpdir() as ray_dir:
        job = Job(args, tmp_path, tmp_path / "first.log", hold="trial", hold_dir=tmp_path,
                  ray_dir=ray_dir)
        job.wait_reached("trial")
        job.proc.send_signal(sig)
        assert job.wait(timeout=300) == code, job.text()[-4000:]
    assert_clean_stop(job, code, "search", resumable=True)
    [parent] = runs(client, "resume")
    assert parent.info.status == "KILLED"
    trials = runs(client, "resume", "trial")
    assert sorted(r.info.status for r in trials) == ["FINISHED", "KILLED"]
    done_before = {r.data.tags["trial_name"]: r.info.run_id for r in trials
                   if r.info.status == "FINISHED"}
    assert client.search_model_versions("name='credit'") == []  # nothing registered yet

    with ray_tmpdir() as ray_dir:
        second = run_job([*args, "--resume"], tmp_path, ray_dir)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert re.search(r"trials\s+3 \(0 errored\)", second.stdout)
    trials = runs(client, "resume", "trial")
    finished = {r.data.tags["trial_name"]: r.info.run_id for r in trials
                if r.info.status == "FINISHED"}
    assert len(finished) == 3
    # the trial finished before the stop was kept, not run again
    for name, run_id in done_before.items():
        assert finished[name] == run_id
        assert [r.data.tags["trial_name"] for r in trials].count(name) == 1
    assert not [r for r in trials if r.info.status == "RUNNING"]
    # one parent run for the whole job, stopped and resumed
    [parent_after] = runs(client, "resume")
    assert parent_after.info.run_id == parent.info.run_id
    assert parent_after.info.status == "FINISHED"
    assert parent_after.data.tags["raylane.model_version"] == "1"
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
