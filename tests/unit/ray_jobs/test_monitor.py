"""``ray_jobs.monitor``'s command line: bad configs and arguments stop it before Ray starts."""

from __future__ import annotations

import pytest
from support.serving import ROOT

from ray_jobs import monitor
from raylane.training.cli import time_arg

CONFIG = str(ROOT / "tune_configs" / "credit_xgboost.yaml")


def test_bad_monitoring_key_exits_2_naming_it(capsys, tmp_path):
    code = monitor.main(["--config", CONFIG, "--predictions", str(tmp_path),
                         "--set", "monitoring.drift.drift_shar=0.3"])
    assert code == 2
    assert "monitoring.drift.drift_shar: unknown key" in capsys.readouterr().err


def test_out_of_range_threshold_exits_2(capsys, tmp_path):
    code = monitor.main(["--config", CONFIG, "--predictions", str(tmp_path),
                         "--set", "monitoring.drift.drift_share=1.5"])
    assert code == 2
    assert "monitoring.drift.drift_share" in capsys.readouterr().err


def test_unknown_model_exits_2(capsys, tmp_path):
    code = monitor.main(["--config", CONFIG, "--predictions", str(tmp_path),
                         "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"])
    assert code == 2
    assert "models:/credit@champion" in capsys.readouterr().err


def test_since_must_be_an_iso_time(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        monitor.main(["--config", CONFIG, "--predictions", str(tmp_path), "--since", "yesterday"])
    assert exc.value.code == 2
    assert "expected an ISO time" in capsys.readouterr().err
    assert time_arg("2026-11-27T10:00").tzinfo is not None  # naive means UTC
