"""The Training page's logic (raylane/console/jobs.py) without a cluster: overrides, validation
before submission, the job's command line and runtime env as the README's `ray job submit`, the
tuning runs from a real SQLite store, and the page when Ray is down (AppTest)."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from streamlit.testing.v1 import AppTest
from support.paths import ROOT

from raylane.config import ConfigError
from raylane.console import jobs
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client

PAGE = str(ROOT / "console" / "pages" / "training.py")
CONFIG = ROOT / "tune_configs" / "credit_xgboost.yaml"


def test_overrides_are_key_value_lines():
    assert jobs.parse_overrides("tune.num_samples=4\n\n# note\n--set tune.search_alg=optuna\n",
                                CONFIG) == ["tune.num_samples=4", "tune.search_alg=optuna"]
    with pytest.raises(ConfigError, match="line 2: expected key=value"):
        jobs.parse_overrides("tune.num_samples=3\ntune.num_samples 4", CONFIG)


@pytest.mark.parametrize("line", [
    "data.path=file:///var/run/secrets/kubernetes.io/serviceaccount/token#.csv",
    "data.target=Home", "mlflow.tracking_uri=http://attacker.example/",
    "mlflow.registered_model=other", "tune.storage_path=/tmp/elsewhere",
    "monitoring.model_uri=https://attacker.example/m", "seed=3", "tune.cpus_per_trial=64",
    "model.family=linear", "model.params.n_estimators=100000",
    "model.search_space.max_depth={type: randint, lower: 2, upper: 100000}",
    "model.search_space.not_in_the_config.lower=1",
])
def test_only_search_keys_may_be_set(line):
    key = line.split("=", 1)[0]
    with pytest.raises(ConfigError, match=rf"line 1: {re.escape(key)}: "):
        jobs.parse_overrides(line, CONFIG)


def test_search_values_are_typed_and_bounded():
    limits = jobs.Limits(max_samples=20, max_time_budget_s=600, margin_s=300)
    ok = ["tune.num_samples=20", "tune.time_budget_s=600", "tune.search_alg=random",
          "tune.scheduler.type=fifo", "tune.scheduler.grace_period=2",
          "tune.scheduler.reduction_factor=2.5", "model.search_space.max_depth.upper=6",
          "model.search_space.learning_rate.lower=0.05"]
    assert jobs.parse_overrides("\n".join(ok), CONFIG, limits) == ok
    for line, problem in [("tune.num_samples=21", "1 to 20 trials"),
                          ("tune.num_samples=1000000", "1 to 20 trials"),
                          ("tune.num_samples=2.5", "an integer"),
                          ("tune.time_budget_s=601", "at most 600 s"),
                          ("tune.search_alg=bayesopt", "one of ['random', 'optuna']"),
                          ("model.search_space.max_depth.upper=[1, 2]", "a number")]:
        with pytest.raises(ConfigError, match=re.escape(problem)):
            jobs.parse_overrides(line, CONFIG, limits)


def test_jobs_carry_the_caps_and_a_deadline(tmp_path):
    limits = jobs.Limits(max_samples=20, max_time_budget_s=600, margin_s=300)
    raw = yaml.safe_load(CONFIG.read_text())
    raw["tune"].update(num_samples=500, time_budget_s=None)
    config = tmp_path / "big.yaml"
    config.write_text(yaml.safe_dump(raw))
    overrides = jobs.bounded(config, [], limits)
    assert overrides == ["tune.num_samples=20", "tune.time_budget_s=600"]
    assert jobs.deadline_s(config, overrides, limits) == 900
    assert jobs.bounded(config, ["tune.time_budget_s=60"], limits) == [
        "tune.time_budget_s=60", "tune.num_samples=20"]
    line = jobs.entrypoint(CONFIG, ["tune.num_samples=4"], deadline=900)
    assert shlex.split(line)[:4] == ["timeout", "--kill-after=60", "900", "python"]


def test_a_config_outside_the_folder_is_refused_before_anything_is_sent(tmp_path):
    other = tmp_path / "mine.yaml"
    other.write_text(CONFIG.read_text())
    with pytest.raises(ConfigError, match="not one of the configs"):
        jobs.submit("http://127.0.0.1:9", other, [], "someone", folder=CONFIG.parent,
                    tracking_uri="http://127.0.0.1:5000")


def test_a_bad_override_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"tune\.shceduler: unknown key"):
        jobs.validate(CONFIG, ["tune.shceduler.type=fifo"])
    assert jobs.validate(CONFIG, ["tune.num_samples=4"]).tune.num_samples == 4


def test_the_console_store_goes_to_the_job_as_its_environment():
    assert jobs.job_env("http://mlflow:5000") == {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert jobs.job_env("sqlite:///mlflow.db") == {}  # relative: the job would refuse
    env = jobs.runtime_env(env=jobs.job_env("http://mlflow:5000"))["env_vars"]
    assert env == {"PYTHONUNBUFFERED": "1", "MLFLOW_TRACKING_URI": "http://mlflow:5000"}


def test_entrypoint_and_runtime_env_are_the_readmes_ray_job_submit():
    line = jobs.entrypoint(CONFIG, ["tune.num_samples=4", "tune.search_alg=random"])
    assert shlex.split(line) == ["python", "-m", "ray_jobs.train_pipeline", "--config",
                                 "tune_configs/credit_xgboost.yaml", "--set", "tune.num_samples=4",
                                 "--set", "tune.search_alg=random"]
    env = jobs.runtime_env()
    assert env["working_dir"] == str(ROOT) and ".git" in env["excludes"]
    assert ".venv*" in env["excludes"] and env["env_vars"]["PYTHONUNBUFFERED"] == "1"



def test_tuning_runs_are_the_jobs_parent_runs(tmp_path):
    client = mlflow_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = open_experiment(client, "credit")
    parent = client.create_run(exp, run_name="credit-job", tags={"raylane.task": "classification",
                                                                  "raylane.family": "xgboost"})
    client.log_metric(parent.info.run_id, "best_valid_roc_auc", 0.8)
    client.create_run(exp, tags={"raylane.role": "trial",
                                 "mlflow.parentRunId": parent.info.run_id})
    monitoring = open_experiment(client, "credit-monitoring")
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
    at.text_area(key="training_overrides").input("tune.num_samples=8\ndata.path=/etc/x.csv")
    next(b for b in at.button if b.label == "Check config").click().run()
    assert any("nothing was submitted" in e.value for e in at.error)
    assert "line 2: data.path: not settable from the console" in at.code[0].value
