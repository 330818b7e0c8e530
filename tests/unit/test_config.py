"""A bad config fails at once, naming the key and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raylane.config import ConfigError, apply_overrides, load_config
from raylane.data.read import DataError
from raylane.training.job import load_data

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "tune_configs").glob("*.yaml"))


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def base() -> dict:
    return yaml.safe_load((ROOT / "tune_configs" / "credit_xgboost.yaml").read_text())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config(path)
    if Path(config.data.path).exists():
        load_data(config)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tune": {"num_samples": "many"}}, "tune.num_samples"),
        ({"tune": {"shceduler": {"type": "asha"}}}, "tune.shceduler: unknown key"),
        ({"tune": {"scheduler": {"type": "pbt"}}}, "tune.scheduler.type"),
        ({"model": {"family": "catboost"}}, "model.family: unknown family 'catboost'"),
        ({"model": {"params": {"maxdepth": 3}}}, "model.params.maxdepth: not a hyperparameter"),
        ({"model": {"search_space": {"learning_rate": {"type": "loguniform", "lower": 0,
                                                       "upper": 1}}}},
         "learning_rate: 'loguniform' needs 'lower' > 0"),
        ({"model": {"search_space": {"max_depth": {"type": "randint", "lower": 5}}}},
         "max_depth: 'randint' needs 'lower' and 'upper'"),
        ({"mlflow": {"registered_model": None}}, "mlflow.registered_model"),
        ({"gates": {"min_holdout": {"auc": 0.8}}}, "gates.min_holdout.auc: unknown metric"),
        ({"tune": {"metric": "accuracy_score"}}, "tune.metric: unknown metric"),
    ],
)
def test_schema_errors_name_the_key(tmp_path, change, expected):
    raw = base()
    for section, values in change.items():
        if section == "model" and "family" not in values:
            raw["model"] = {**raw["model"], **values} if "search_space" not in values else {
                **raw["model"], "search_space": {**raw["model"]["search_space"],
                                                 **values["search_space"]}}
        else:
            raw[section] = {**raw.get(section, {}), **values}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, raw))
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.target=Nope"], "data.target: column 'Nope' not in the data"),
        (["data.path=/no/such/file.csv"], "data.path: file not found"),
        (["data.drop=[Ghost]"], "data.drop: columns ['Ghost']"),
        (["tune.metric=rmse"], "tune.metric: 'rmse' is a regression metric"),
    ],
)
def test_data_errors_name_the_key(monkeypatch, overrides, expected):
    monkeypatch.chdir(ROOT)
    config = load_config(ROOT / "tune_configs" / "credit_xgboost.yaml", overrides)
    with pytest.raises((DataError, ValueError)) as err:
        load_data(config)
    assert expected in str(err.value)


def test_single_class_target_is_rejected(tmp_path):
    table = tmp_path / "one.csv"
    table.write_text("x,y\n" + "".join(f"{i},yes\n" for i in range(50)))
    raw = base()
    raw["data"] = {"path": str(table), "target": "y"}
    config = load_config(write(tmp_path, raw))
    with pytest.raises(DataError, match=r"data.target: classification needs at least 2 classes"):
        load_data(config)


def test_overrides_parse_yaml_values():
    raw = apply_overrides({"tune": {"num_samples": 4}}, ["tune.num_samples=40",
                                                         "data.drop=[a, b]", "seed=3"])
    assert raw == {"tune": {"num_samples": 40}, "data": {"drop": ["a", "b"]}, "seed": 3}
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        apply_overrides({}, ["tune.num_samples"])


def test_cli_fails_fast_before_ray_starts(tmp_path):
    """The job exits 2 with the message, without starting Ray (no 'Started a local Ray')."""
    out = subprocess.run(
        [sys.executable, "-m", "ray_jobs.train_pipeline", "--config",
         "tune_configs/credit_xgboost.yaml", "--set", "data.target=Missing"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "data.target: column 'Missing' not in the data" in out.stderr
    assert "Ray instance" not in out.stderr + out.stdout
