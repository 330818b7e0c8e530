"""The Airflow DAG airflow/dags/raylane_ct.py on Airflow 3 in its own environment
(`make airflow-install`): `airflow dags test raylane_ct` against a real `ray start --head` with
token auth; the DAG gets the cluster's address and token from an Airflow Connection only (no
token file anywhere, HOME empty), every task submits its Ray job through the Job Submission SDK,
and the report shows in the task log. A trigger conf outside the DAG's params is refused before
any job is submitted."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from support.paths import CREDIT_CSV, ROOT
from support.ray_auth import RayHead, token_ray_head  # noqa: F401 - the fixture

from raylane.tracking.runs import mlflow_client

pytestmark = pytest.mark.slow
AIRFLOW_BIN = ROOT / ".venv-airflow" / "bin"


@pytest.fixture(scope="module")
def airflow_env() -> None:
    out = subprocess.run(["make", "airflow-install"], cwd=ROOT, capture_output=True, text=True,
                         timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def airflow_runner(tmp_path: Path, connection: dict, extra_env: dict[str, str]):
    """A function running the `airflow` CLI with its own AIRFLOW_HOME and an empty HOME."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHON", "RAY_"))}
    env.update({
        "HOME": str(home),
        "PATH": f"{AIRFLOW_BIN}{os.pathsep}{env['PATH']}",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_RAYLANE_RAY": json.dumps(connection),
        **extra_env,
    })

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(AIRFLOW_BIN / "airflow"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)

    migrated = airflow("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return airflow


def connection(head: RayHead) -> dict:
    url = urlsplit(head.url)
    return {"conn_type": "http", "host": url.hostname, "port": url.port, "schema": url.scheme,
            "password": head.token}


def test_airflow_dag_monitor_branch_retrain_report(airflow_env, token_ray_head,  # noqa: F811
                                                   tmp_path):
    new = tmp_path / "new.parquet"
    pd.read_csv(CREDIT_CSV).iloc[:600].to_parquet(new)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    airflow = airflow_runner(tmp_path, connection(token_ray_head), {
        "RAYLANE_NEW_DATA_URI": str(new),
        # the deployment's overrides: where results go (a trigger may not set these)
        "RAYLANE_CT_SET": " ".join([
            f"mlflow.tracking_uri={uri}", "model.search_space.n_estimators=30",
            f"tune.storage_path={tmp_path / 'rr'}"]),
    })
    conf = {"force": True, "overrides": ["tune.num_samples=2", "tune.search_alg=random"]}
    ran = airflow("dags", "test", "raylane_ct", "-c", json.dumps(conf))
    log = ran.stdout + ran.stderr
    (tmp_path / "dags_test.log").write_text(log)
    assert ran.returncode == 0, log[-5000:]
    assert token_ray_head.token not in log  # Airflow masks the connection's password
    # `dags test` runs the tasks in process and prints each task's log to the console
    report = log[log.index("Raylane continuous training report (Airflow)"):]
    assert log.count("submitted Ray job") == 2  # monitor and retrain, through the SDK
    assert "--set tune.num_samples=2 --set tune.search_alg=random" in log
    assert "Raylane continuous training" in log  # the job's own summary, streamed
    assert "monitor decision   retrain (forced)" in report
    assert "decision           promoted" in report
    client = mlflow_client(uri)
    version = client.get_model_version_by_alias("credit", "champion")
    assert f"CT run             {version.tags['raylane.ct.run_id']}" in report
    assert not list((tmp_path / "home").rglob("auth_token"))


BAD_CONFS = [
    ({"overrides": ["mlflow.tracking_uri=http://elsewhere"]}, "overrides"),
    ({"config": "../../etc/passwd"}, "config"),
    ({"new_data": "-rf /"}, "new_data"),
]


def test_airflow_dag_refuses_params_outside_its_schema(airflow_env, tmp_path):
    # no Ray cluster at all: the run must stop before any task tries to reach one
    airflow = airflow_runner(tmp_path, {"conn_type": "http", "host": "127.0.0.1", "port": 9},
                             {})
    for conf, field in BAD_CONFS:
        ran = airflow("dags", "test", "raylane_ct", "-c", json.dumps(conf))
        log = ran.stdout + ran.stderr
        assert ran.returncode != 0, log[-3000:]
        assert f"Invalid input for param {field}" in log, log[-3000:]
        assert "submitted Ray job" not in log
