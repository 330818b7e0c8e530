"""The Training page's logic (raylane/console/jobs.py) without a cluster: overrides, validation
before submission, the job's command line and runtime env as the README's `ray job submit`, the
tuning runs from a real SQLite store, and the page when Ray is down (AppTest)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from raylane.config import ConfigError
from raylane.console import jobs
from raylane.tracking.runs import ensure_experiment, mlflow_client

ROOT = Path(__file__).resolve().parents[2]
PAGE = str(ROOT / "console" / "pages" / "training.py")
CONFIG = ROOT / "tune_configs" / "credit_xgboost.yaml"


def test_overrides_are_key_value_lines():
    assert jobs.parse_overrides("tune.num_samples=4\n\n# note\n--set seed=3\n") == [
        "tune.num_samples=4", "seed=3"]
    with pytest.raises(ConfigError, match="line 2: expected key=value"):
        jobs.parse_overrides("seed=3\ntune.num_samples 4")


def test_a_bad_override_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"tune\.shceduler: unknown key"):
        jobs.validate(CONFIG, ["tune.shceduler.type=fifo"])
    assert jobs.validate(CONFIG, ["tune.num_samples=4"]).tune.num_samples == 4


def test_the_console_store_goes_to_the_job_unless_overridden():
    assert jobs.with_tracking([], "http://mlflow:5000") == ["mlflow.tracking_uri=http://mlflow:5000"]
    assert jobs.with_tracking(["mlflow.tracking_uri=x"], "http://m") == ["mlflow.tracking_uri=x"]
    assert jobs.with_tracking([], "sqlite:///mlflow.db") == []  # relative: the job would refuse


def test_entrypoint_and_runtime_env_are_the_readmes_ray_job_submit():
    line = jobs.entrypoint(CONFIG, ["tune.num_samples=4", "data.path=/d/a b.csv"])
    assert shlex.split(line) == ["python", "-m", "ray_jobs.train_pipeline", "--config",
                                 "tune_configs/credit_xgboost.yaml", "--set", "tune.num_samples=4",
                                 "--set", "data.path=/d/a b.csv"]
    env = jobs.runtime_env()
    assert env["working_dir"] == str(ROOT) and ".git" in env["excludes"]
    assert ".venv" in env["excludes"] and env["env_vars"]["PYTHONUNBUFFERED"] == "1"


def test_the_cluster_token_is_sent(tmp_path):
    (tmp_path / "tok").write_text("abc\n")
    assert jobs.auth_headers({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}) == {
        "Authorization": "Bearer abc"}
    assert jobs.auth_headers({"RAY_AUTH_TOKEN": "xyz"}) == {"Authorization": "Bearer xyz"}
    assert jobs.auth_headers({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}) == {}


def test_tuning_runs_are_the_jobs_parent_runs(tmp_path):
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = ensure_experiment(client, "credit")
    parent = client.create_run(exp, run_name="credit-job", tags={"raylane.task": "classification",
                                                                  "raylane.family": "xgboost"})
    client.log_metric(parent.info.run_id, "best_valid_roc_auc", 0.8)
    client.create_run(exp, tags={"raylane.role": "trial",
                                 "mlflow.parentRunId": parent.info.run_id})
    monitoring = ensure_experiment(client, "credit-monitoring")
    client.create_run(monitoring, tags={"raylane.task": "classification"})
    found = jobs.tuning_runs(client)
    assert [r.info.run_id for r in found] == [parent.info.run_id]
    table = jobs.runs_table(found)
    assert table.metric[0] == "roc_auc" and table["best valid"][0] == 0.8
    assert jobs.search_plot(client, parent.info.run_id) is None


def test_page_checks_the_config_and_says_ray_is_down(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    down = [e.value for e in at.error]
    assert any("MLflow is not reachable" in e for e in down), down
    assert any("Ray's dashboard is not reachable" in e for e in down), down
    at.text_area(key="training_overrides").input("tune.shceduler.type=fifo")
    at.button[1].click().run()  # "Submit to Ray"
    assert any("nothing was submitted" in e.value for e in at.error)
    assert "tune.shceduler: unknown key" in at.code[0].value
