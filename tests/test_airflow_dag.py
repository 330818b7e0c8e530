"""The Airflow DAG airflow/dags/raylane_ct.py in its own environment (`make airflow-install`):
`airflow dags test raylane_ct` against a real `ray start --head`; every task submits its Ray job
through the Job Submission SDK, and the report shows in the task log."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest
from support.paths import CREDIT_CSV, ROOT

from raylane.tracking.runs import mlflow_client

pytestmark = pytest.mark.slow
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"


@pytest.fixture(scope="module")
def airflow_env() -> None:
    out = subprocess.run(["make", "airflow-install"], cwd=ROOT, capture_output=True, text=True,
                         timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_airflow_dag_monitor_branch_retrain_report(airflow_env, ray_head, tmp_path):
    new = tmp_path / "new.parquet"
    pd.read_csv(CREDIT_CSV).iloc[:600].to_parquet(new)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    home = tmp_path / "airflow"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHON", "RAY_ADDRESS"))}
    env.update({
        "PATH": f"{AIRFLOW_BIN}{os.pathsep}{env['PATH']}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "RAY_AUTH_MODE": "token",
        "RAYLANE_RAY_ADDRESS": ray_head,
        "RAYLANE_NEW_DATA_URI": str(new),
        "RAYLANE_CT_SET": " ".join([
            f"mlflow.tracking_uri={uri}", "tune.num_samples=2", "tune.search_alg=random",
            "model.search_space.n_estimators=30", f"tune.storage_path={tmp_path / 'rr'}"]),
    })

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(AIRFLOW_BIN / "airflow"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)

    migrated = airflow("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    ran = airflow("dags", "test", "raylane_ct", "-c", json.dumps({"force": True}))
    log = ran.stdout + ran.stderr
    (home / "dags_test.log").write_text(log)
    assert ran.returncode == 0, log[-5000:]
    # `dags test` runs the tasks in process and prints each task's log to the console
    for task in ("monitor", "branch", "retrain", "report"):
        assert f"Marking task as SUCCESS. dag_id=raylane_ct, task_id={task}," in log, task
    report = log[log.index("[DAG TEST] starting task_id=report"):]
    assert log.count("submitted Ray job") == 2  # monitor and retrain, through the SDK
    assert "Raylane continuous training" in log  # the job's own summary, streamed
    assert "Raylane continuous training report (Airflow)" in report
    assert "monitor decision   retrain (forced)" in report
    assert "decision           promoted" in report
    client = mlflow_client(uri)
    version = client.get_model_version_by_alias("credit", "champion")
    assert f"CT run             {version.tags['raylane.ct.run_id']}" in report
