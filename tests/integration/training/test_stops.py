"""Clean stops of the training job at a stage boundary (SIGINT and SIGTERM), resume after them,
and a second signal; real processes, held at a known point by the job's test-only hooks."""

from __future__ import annotations

import signal
import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from support.jobs import Job, assert_clean_stop, job_args, ray_tmpdir, run_job, runs
from support.paths import CREDIT_CSV

pytestmark = pytest.mark.slow


def test_sigterm_during_registration_then_resume(tmp_path, sqlite_uri):
    """After the search: stopped during registration, the parent run is KILLED, nothing is
    registered; --resume refuses other data, then continues under the same parent run."""
    client = MlflowClient(sqlite_uri)
    args = job_args(tmp_path, sqlite_uri, "stop-reg")
    with ray_tmpdir() as ray_dir:
        job = Job(args, tmp_path, tmp_path / "first.log", hold="registration",
                  hold_dir=tmp_path, ray_dir=ray_dir)
        job.wait_reached("registration")
        job.proc.send_signal(signal.SIGTERM)
        assert job.wait() == 143, job.text()[-4000:]
    assert_clean_stop(job, 143, "registration", resumable=True)
    [parent] = runs(client, "stop-reg")
    assert parent.info.status == "KILLED"
    assert {r.info.status for r in runs(client, "stop-reg", "trial")} == {"FINISHED"}
    assert client.search_model_versions("name='credit'") == []

    other = tmp_path / "other.csv"
    pd.read_csv(CREDIT_CSV).iloc[:-50].to_csv(other, index=False)
    refused = run_job([*args, "--set", f"data.path={other}", "--resume"], tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "cannot resume: the data changed" in refused.stderr

    with ray_tmpdir() as ray_dir:
        resumed = run_job([*args, "--resume"], tmp_path, ray_dir)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-4000:]
    [parent_after] = runs(client, "stop-reg")
    assert parent_after.info.run_id == parent.info.run_id
    assert parent_after.info.status == "FINISHED"
    assert len(runs(client, "stop-reg", "trial")) == 3  # the finished search was not re-run
    assert [str(v.version) for v in client.search_model_versions("name='credit'")] == ["1"]


def test_sigint_during_promotion_is_not_resumed(tmp_path, sqlite_uri):
    """Stopped after a version was registered: --resume says why it cannot continue."""
    client = MlflowClient(sqlite_uri)
    args = job_args(tmp_path, sqlite_uri, "stop-promo")
    with ray_tmpdir() as ray_dir:
        job = Job(args, tmp_path, tmp_path / "first.log", hold="promotion", hold_dir=tmp_path,
                  ray_dir=ray_dir)
        job.wait_reached("promotion")
        job.proc.send_signal(signal.SIGINT)
        assert job.wait() == 130, job.text()[-4000:]
    line = assert_clean_stop(job, 130, "promotion", resumable=False)
    assert "registered model version 1" in line
    [parent] = runs(client, "stop-promo")
    assert parent.info.status == "KILLED"
    refused = run_job([*args, "--resume"], tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "cannot resume" in refused.stderr and "registered model version 1" in refused.stderr


def test_sigint_during_export_is_resumable(tmp_path, sqlite_uri):
    """After the search, the other signal: stopped while exporting, nothing registered, the
    parent run KILLED, and the line says --resume can continue."""
    client = MlflowClient(sqlite_uri)
    args = job_args(tmp_path, sqlite_uri, "stop-export")
    with ray_tmpdir() as ray_dir:
        job = Job(args, tmp_path, tmp_path / "first.log", hold="export", hold_dir=tmp_path,
                  ray_dir=ray_dir)
        job.wait_reached("export")
        job.proc.send_signal(signal.SIGINT)
        assert job.wait() == 130, job.text()[-4000:]
    assert_clean_stop(job, 130, "export", resumable=True)
    [parent] = runs(client, "stop-export")
    assert parent.info.status == "KILLED"
    assert client.search_model_versions("name='credit'") == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_during_data_load(tmp_path, sqlite_uri, sig):
    """Before any run or Ray exists: a clean stop, and --resume says there is nothing to resume."""
    args = job_args(tmp_path, sqlite_uri, "stop-data")
    job = Job(args, tmp_path, tmp_path / "job.log", hold="data load", hold_dir=tmp_path)
    job.wait_reached("data load")
    job.proc.send_signal(sig)
    code = 128 + sig
    assert job.wait(timeout=60) == code, job.text()
    line = assert_clean_stop(job, code, "data load", resumable=False)
    assert "nothing was started" in line
    refused = run_job([*args, "--resume"], tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "cannot resume: no search to resume" in refused.stderr


def test_second_signal_stops_at_once(tmp_path, sqlite_uri):
    """A second signal while the job is still stopping (held there) ends it at once, with the
    second signal's exit code and one line."""
    args = job_args(tmp_path, sqlite_uri, "stop-twice")
    job = Job(args, tmp_path, tmp_path / "job.log", hold="data load,stopping",
              hold_dir=tmp_path)
    job.wait_reached("data load")
    job.proc.send_signal(signal.SIGTERM)
    job.wait_reached("stopping", timeout=60)
    sent = time.monotonic()
    job.proc.send_signal(signal.SIGINT)
    assert job.wait(timeout=10) == 130, job.text()
    assert time.monotonic() - sent < 5
    log = job.text()
    assert [ln for ln in log.splitlines() if ln.startswith("stopped")] == [
        "stopped at once by a second SIGINT during data load"]
    assert "Traceback" not in log
