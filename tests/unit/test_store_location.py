"""A job run from Ray's uploaded working directory (``ray job submit --working-dir``) refuses a
tracking store inside it before any work (raylane/tracking/experiments.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CREDIT_CSV, ROOT

from raylane.config import ConfigError
from raylane.tracking.experiments import (
    check_store,
    new_experiment_artifact_location,
    ray_package_dir,
)


@pytest.fixture()
def ray_pkg(tmp_path) -> Path:
    """A directory laid out as Ray unpacks a job's working_dir."""
    pkg = (tmp_path / "ray" / "session_2026-11-27_10-00-00_1_1" / "runtime_resources"
           / "working_dir_files" / "_ray_pkg_0123abcd")
    pkg.mkdir(parents=True)
    return pkg


def test_paths_inside_a_ray_package_are_detected(ray_pkg, tmp_path):
    assert ray_package_dir(ray_pkg / "mlflow.db") == ray_pkg
    assert ray_package_dir(ray_pkg / "sub" / "mlruns") == ray_pkg
    assert ray_package_dir(tmp_path / "mlflow.db") is None
    link = tmp_path / "latest"
    link.symlink_to(ray_pkg)  # as /tmp/ray/session_latest points at the session
    assert ray_package_dir(link / "mlflow.db") == ray_pkg


def test_stores_inside_a_ray_package_are_refused_with_how_to_fix(ray_pkg, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(ray_pkg)
    for uri in ("sqlite:///mlflow.db", f"sqlite:///{ray_pkg}/mlflow.db", "mlruns",
                f"file://{ray_pkg}/mlruns"):
        with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI") as info:
            check_store(uri)
        assert str(ray_pkg) in str(info.value) and "absolute path" in str(info.value)
    for uri in (f"sqlite:///{tmp_path}/mlflow.db", "http://mlflow:5000", "databricks"):
        check_store(uri)


def test_new_experiments_keep_their_artifacts_next_to_the_database(ray_pkg, tmp_path):
    """An absolute SQLite URI from a job in a Ray package: MLflow's default artifact root
    (./mlruns) would be inside the package; the experiment goes next to the database."""
    db = f"sqlite:///{tmp_path}/store/mlflow.db"
    assert new_experiment_artifact_location(db, "credit runs", cwd=ray_pkg) == \
        str(tmp_path / "store" / "mlruns" / "credit_runs")
    assert new_experiment_artifact_location(db, "credit", cwd=tmp_path) is None  # as before
    assert new_experiment_artifact_location("http://mlflow:5000", "credit", cwd=ray_pkg) is None


def test_the_job_refuses_before_any_work_in_a_ray_working_dir(ray_pkg, tmp_path):
    """The job as `ray job submit` runs it (cwd in the package, no tracking URI) exits 2 with
    the fix; it must not get as far as its first stage after opening the store."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update(PYTHONPATH=str(ROOT), RAYLANE_TEST_HOLD="tracking setup",
               RAYLANE_TEST_HOLD_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_jobs.train_pipeline", "--config",
         str(ROOT / "tune_configs" / "credit_xgboost.yaml"), "--set", f"data.path={CREDIT_CSV}",
         "--set", f"tune.storage_path={tmp_path / 'ray_results'}"],
        cwd=ray_pkg, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and not (tmp_path / "tracking setup.reached").exists():
            assert time.monotonic() < deadline, "the job neither refused nor went on"
            time.sleep(0.1)
        assert proc.poll() is not None, "the job opened its store in Ray's working dir"
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
    assert proc.returncode == 2, out
    assert "inside the working directory Ray uploaded" in out and "MLFLOW_TRACKING_URI" in out
    assert not (ray_pkg / "mlflow.db").exists()
