"""`ray job submit` of the continuous-training job to a running `ray start --head`, as users
run it (the README's Continuous training section)."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from conftest import BIN, CREDIT_CSV, ROOT
from job_support import (
    ray_head,  # noqa: F401 - the fixture: a real `ray start --head`
    ray_job_submit,
)

from raylane.tracking.runs import mlflow_client

pytestmark = pytest.mark.slow


def test_ray_job_submit_runs_continuous_training_forced(ray_head, tmp_path):  # noqa: F811
    new = tmp_path / "new"
    new.mkdir()
    frame = pd.read_csv(CREDIT_CSV)
    frame.iloc[:500].to_parquet(new / "part-0.parquet")   # a directory of new labelled rows
    frame.iloc[500:900].to_csv(new / "part-1.csv", index=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    submit = [str(BIN / "ray"), "job", "submit", "--address", ray_head,
              "--working-dir", str(ROOT),
              "--runtime-env", str(ROOT / "ray_jobs" / "runtime_env.yaml"), "--",
              "python", "-m", "ray_jobs.continuous_training",
              "--config", "tune_configs/credit_xgboost.yaml", "--force",
              "--new-data", str(new),
              "--set", "tune.num_samples=2", "--set", "tune.search_alg=random",
              "--set", "model.search_space.n_estimators=30",
              "--set", f"mlflow.tracking_uri={uri}",
              "--set", f"tune.storage_path={tmp_path / 'ray_results'}"]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    out, log = ray_job_submit(submit, tmp_path, env)
    assert out.returncode == 0, log[-4000:]
    assert "Raylane continuous training" in log and "trigger          forced" in log
    client = mlflow_client(uri)
    experiment = client.get_experiment_by_name("credit-ct")
    (ct_run,) = client.search_runs([experiment.experiment_id])
    tags = ct_run.data.tags
    assert tags["raylane.ct.trigger"] == "forced" and tags["raylane.ct.decision"] == "promoted"
    assert ct_run.data.metrics["new_rows"] == 900
    version = client.get_model_version_by_alias("credit", "champion")
    assert version.tags["raylane.ct.run_id"] == ct_run.info.run_id
    assert str(version.version) == tags["raylane.model_version"]
