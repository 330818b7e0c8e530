"""Jobs read and write only where the operator allows: checked when the config is loaded, before
any read, with an error naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raylane.config import ConfigError, load_config
from raylane.data.read import DataError, read_table
from raylane.data.tables import read_tables
from raylane.locations import ENV_ALLOWED, LocationError, check_location, policy_from_env

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tune_configs" / "credit_xgboost.yaml"
TOKEN = "file:///var/run/secrets/kubernetes.io/serviceaccount/token#.csv"


@pytest.fixture(autouse=True)
def _project_dir(monkeypatch):
    monkeypatch.chdir(ROOT)
    for name in (ENV_ALLOWED, "MLFLOW_TRACKING_URI", "RAYLANE_PREDICTION_LOG",
                 "RAYLANE_NEW_DATA_URI", "RAYLANE_LABELS_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("override", "field"), [
    ("data.path=https://attacker.example/x.csv", "data.path"),
    (f"data.path={TOKEN}", "data.path"),
    ("data.path=/etc/passwd.csv", "data.path"),
    ("data.path=file:///proc/self/environ", "data.path"),
    ("data.path=http://169.254.169.254/latest/meta-data/x.csv", "data.path"),
    ("data.path=s3://someone-elses-bucket/x.parquet", "data.path"),
    ("mlflow.tracking_uri=http://attacker.example/", "mlflow.tracking_uri"),
    ("mlflow.tracking_uri=sqlite:////etc/mlflow.db", "mlflow.tracking_uri"),
    ("mlflow.tracking_uri=postgresql://user:pw@db.example/mlflow", "mlflow.tracking_uri"),
    ("tune.storage_path=/var/lib/elsewhere", "tune.storage_path"),
    # object storage is for data-parallel trials; one-process trials refuse any URI first
    ("tune.storage_path=s3://someone-elses-bucket/tune tune.workers_per_trial=2",
     "tune.storage_path"),
    ("monitoring.model_uri=https://attacker.example/model", "monitoring.model_uri"),
])
def test_config_refuses_locations_outside_the_allowlist(override, field):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIG, override.split())
    assert f"{field}: " in str(err.value)
    assert ENV_ALLOWED in str(err.value) or "not accepted" in str(err.value)


def test_shipped_defaults_and_local_stores_pass(tmp_path):
    config = load_config(CONFIG, [f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                                  f"tune.storage_path={tmp_path / 'ray_results'}",
                                  "mlflow.tracking_uri=http://127.0.0.1:5000"])
    assert config.data.path == "data/credit_data.csv"


def test_an_operator_list_admits_prefixes_on_a_path_boundary(monkeypatch):
    monkeypatch.setenv(ENV_ALLOWED, "s3://data-bucket/tables, https://data.example.com/pub/")
    policy = policy_from_env()
    check_location("data.path", "s3://data-bucket/tables/x.parquet", policy)
    check_location("data.path", "S3://data-bucket/tables/x.parquet", policy)
    check_location("data.path", "https://DATA.example.com/pub/x.csv", policy)
    for bad in ("s3://data-bucket/tables-other/x.parquet",
                "https://data.example.com.attacker.example/pub/x.csv",
                "https://data.example.com@attacker.example/pub/x.csv",
                "https://data.example.com/pub/../private/x.csv",
                "https://data.example.com/pub/x#.csv",
                # listed: loopback is no longer allowed by default
                "http://127.0.0.1:5000"):
        with pytest.raises(LocationError, match=r"data\.path"):
            check_location("data.path", bad, policy)


def test_locations_the_operator_set_in_the_environment_are_trusted(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("RAYLANE_PREDICTION_LOG", "s3://raylane-predictions/log")
    config = load_config(CONFIG, ["mlflow.tracking_uri=http://mlflow:5000"])
    assert config.mlflow.tracking_uri == "http://mlflow:5000"
    check_location("--predictions", "s3://raylane-predictions/log/credit")
    with pytest.raises(LocationError):
        check_location("--predictions", "s3://raylane-predictions/logs-of-another")
    with pytest.raises(ConfigError, match=r"mlflow\.tracking_uri"):
        load_config(CONFIG, ["mlflow.tracking_uri=http://mlflow.attacker.example:5000"])


def test_symlinks_out_of_the_working_directory_are_followed(tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("a,b\n1,2\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / "link.csv").symlink_to(outside / "secret.csv")
    monkeypatch.chdir(work)
    monkeypatch.setenv(ENV_ALLOWED, str(work))  # listed: the temporary directory is not a root
    with pytest.raises(DataError, match=r"data\.path: .*outside the allowed locations"):
        read_table("link.csv")


def test_readers_check_before_reading(tmp_path):
    with pytest.raises(DataError, match=r"data.path: .*fragment"):
        read_table(TOKEN)
    with pytest.raises(DataError, match="--new-data: "):
        read_tables("/etc", "--new-data")
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    assert len(read_table(str(tmp_path / "t.csv"))) == 1


def test_suffix_is_read_from_the_path_not_a_query_or_fragment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_ALLOWED, "https://data.example.com/")
    with pytest.raises(DataError, match=r"expected a \.csv, \.tsv or \.parquet file"):
        read_table("https://data.example.com/secret?x=.csv")


def test_monitor_cli_refuses_an_unlisted_prediction_log(tmp_path, capsys):
    from ray_jobs import monitor

    raw = yaml.safe_load(CONFIG.read_text())
    raw["mlflow"]["tracking_uri"] = f"sqlite:///{tmp_path}/mlflow.db"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    code = monitor.main(["--config", str(config), "--predictions", "https://attacker.example/log"])
    assert code == 2
    assert "--predictions: 'https://attacker.example/log'" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()  # refused before MLflow was opened
