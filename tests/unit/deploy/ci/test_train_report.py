"""The PR comment from a training job's log (raylane.deploy.ci.train_report): the summary table
raylane.training.summary prints is read back (promotion reasons included), the last summary
wins, a log without one is an error, and the job's entrypoint keeps a PR's run away from the
champion."""

from __future__ import annotations

import shlex

import pytest

from raylane.deploy.ci import train_report

LOG = """\
2026-12-04 INFO lots of Tune output
========================================================================
Raylane training summary
========================================================================
  trials                       4 (1 errored)
  best valid roc_auc           0.8312
  best params                  learning_rate=0.05, max_depth=4

  holdout metric         model    baseline    champion
  accuracy              0.7800      0.7200
  roc_auc               0.8250      0.5000      0.8400

  diagnosis                    ok (train-valid gap 2.0%)
  ONNX parity                  passed: max |diff| 1e-07 on 900 holdout rows
  gates                        passed
  registered                   models:/raylane-pr-3/2
  alias                        challenger (not promoted)
                               - challenger roc_auc 0.8250 < champion 0.8400
                               - kept the champion
  MLflow run                   0123456789abcdef0123456789abcdef at http://mlflow:5000
  took                         41 s

Look next:
  MLflow UI: http://mlflow:5000
========================================================================
"""


def test_the_summary_is_read_back_with_the_champion_and_the_reasons():
    summary = train_report.parse_summary("an older run\n" + LOG)
    assert summary.rows["trials"] == "4 (1 errored)"
    assert summary.rows["alias"] == "challenger (not promoted)"
    assert summary.holdout == [("accuracy", "0.7800", "0.7200", ""),
                               ("roc_auc", "0.8250", "0.5000", "0.8400")]
    assert summary.reasons == ["challenger roc_auc 0.8250 < champion 0.8400", "kept the champion"]
    text = train_report.render_markdown(summary, "raysubmit_x", "tune_configs/c.yaml", "abc",
                                        "https://mlflow.example.com/")
    assert "| roc_auc | 0.8250 | 0.5000 | 0.8400 |" in text
    assert "alias `challenger (not promoted)`\n- challenger roc_auc 0.8250 < champion" in text
    assert ("[`0123456789abcdef0123456789abcdef`](https://mlflow.example.com/#/runs/"
            "0123456789abcdef0123456789abcdef)") in text
    assert "max \\|diff\\|" not in text  # only table cells are escaped


def test_without_the_ui_the_run_names_its_tracking_uri():
    text = train_report.render_markdown(train_report.parse_summary(LOG), "j", "c.yaml")
    assert "`0123456789abcdef0123456789abcdef` at `http://mlflow:5000`" in text


def test_a_log_without_a_summary_is_an_error():
    with pytest.raises(ValueError, match="no training summary"):
        train_report.parse_summary("Traceback (most recent call last):\n")


def test_a_pull_requests_run_has_its_own_experiment_and_model():
    argv = shlex.split(train_report.entrypoint("tune_configs/c.yaml", ["tune.num_samples=2"], 9))
    assert argv[:5] == ["python", "-m", "ray_jobs.train_pipeline", "--config",
                        "tune_configs/c.yaml"]
    assert argv[5:] == ["--set", "mlflow.experiment=raylane-pr-9", "--set",
                        "mlflow.registered_model=raylane-pr-9", "--set", "tune.num_samples=2"]
