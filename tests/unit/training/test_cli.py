"""The command line the jobs share (raylane/training/cli.py): exit codes, and ``--since`` /
``--until`` as times in every job."""

from __future__ import annotations

import argparse
import signal
from datetime import UTC, datetime

import pytest
from support.serving import ROOT

from ray_jobs import continuous_training, monitor, train_pipeline
from raylane.config import ConfigError
from raylane.data.read import DataError
from raylane.model.store import ModelNotFoundError
from raylane.release.export import ParityError
from raylane.training import interrupts
from raylane.training.cli import add_window, job_parser, run_job, time_arg

CONFIG = str(ROOT / "tune_configs" / "credit_xgboost.yaml")


@pytest.fixture(autouse=True)
def own_signal_handlers():
    """The training and CT jobs take over SIGINT/SIGTERM: give them back to pytest."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def raising(exc: BaseException):
    def body(args: argparse.Namespace) -> int:
        raise exc
    return body


@pytest.mark.parametrize(("exc", "code"), [
    (ConfigError("tune.num_samples: expected an int"), 2),
    (DataError("data.path: no such file"), 2),
    (ParityError("ONNX parity check failed; nothing was registered"), 3),
])
def test_a_jobs_failures_become_exit_codes_with_one_line(capsys, exc, code):
    parser = job_parser("A job.", "tune.num_samples=4")
    assert run_job(parser, raising(exc), ["--config", CONFIG], stops=False) == code
    assert capsys.readouterr().err == f"error: {exc}\n"


def test_a_jobs_own_bad_input_exits_2(capsys):
    parser = job_parser("A job.", "x=1")
    missing = ModelNotFoundError("models:/credit@champion: no such alias")
    assert run_job(parser, raising(missing), ["--config", CONFIG], stops=False,
                   bad_input=(ModelNotFoundError,)) == 2
    with pytest.raises(ModelNotFoundError):  # not declared: a bug, with its traceback
        run_job(parser, raising(missing), ["--config", CONFIG], stops=False)


def test_done_is_0_and_the_options_reach_the_body():
    parser = job_parser("A job.", "x=1")
    add_window(parser)
    seen = {}

    def body(args: argparse.Namespace) -> int:
        seen.update(vars(args))
        return 0

    assert run_job(parser, body, ["--config", CONFIG, "--set", "a=1", "--set", "b=2",
                                  "--since", "2026-11-27T10:00"], stops=False) == 0
    assert seen["set"] == ["a=1", "b=2"] and seen["until"] is None
    assert seen["since"] == datetime(2026, 11, 27, 10, tzinfo=UTC)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_exits_130_or_143_with_where_it_stopped(capsys, monkeypatch, signum, code):
    monkeypatch.setattr(interrupts, "_ctl", interrupts._Controller())  # a stop is for good
    parser = job_parser("A job.", "x=1")
    assert run_job(parser, raising(interrupts.Stopped(signum, "data load")),
                   ["--config", CONFIG], stops=False) == code
    assert "data load" in capsys.readouterr().err


@pytest.mark.parametrize("job", [monitor, continuous_training])
def test_since_is_a_time_in_every_job(capsys, tmp_path, job):
    """Continuous training passed --since on as text: a bad one failed inside the monitor,
    after the CT run had started."""
    with pytest.raises(SystemExit) as exc:
        job.main(["--config", CONFIG, "--predictions", str(tmp_path), "--since", "yesterday"])
    assert exc.value.code == 2
    assert "expected an ISO time" in capsys.readouterr().err


def test_time_arg_reads_zones():
    assert time_arg("2026-11-27T10:00+02:00") == datetime(2026, 11, 27, 8, tzinfo=UTC)
    assert time_arg("2026-11-27").tzinfo is UTC


@pytest.mark.parametrize("job", [train_pipeline, continuous_training, monitor])
def test_a_bad_config_key_exits_2_in_every_job(capsys, tmp_path, job):
    extra = [] if job is train_pipeline else ["--predictions", str(tmp_path)]
    assert job.main(["--config", CONFIG, *extra, "--set", "tune.num_sample=3"]) == 2
    assert "tune.num_sample" in capsys.readouterr().err
