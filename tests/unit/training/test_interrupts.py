"""The resume state and the stop controller's bookkeeping, without a job process."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from raylane.tracking.experiments import open_experiment
from raylane.training import interrupts
from raylane.training.interrupts import JobState, ResumeError, Stopped


def test_stopped_exit_codes_and_message():
    assert Stopped(signal.SIGINT, "refit").exit_code == 130
    stop = Stopped(signal.SIGTERM, "registration")
    assert stop.exit_code == 143
    assert str(stop) == "stopped by SIGTERM during registration"
    assert not isinstance(stop, Exception)  # `except Exception` in a library cannot swallow it


def test_resume_state_round_trip_and_refusals(tmp_path):
    state = JobState.new(tmp_path, "run123", "digest-a")
    state.stages_done.append("search")
    state.save()
    loaded = JobState.for_resume(tmp_path, "digest-a")
    assert (loaded.parent_run_id, loaded.done("search")) == ("run123", True)
    with pytest.raises(ResumeError, match=r"the data changed.*digest-a.*digest-b"):
        JobState.for_resume(tmp_path, "digest-b")
    loaded.stages_done.append("registration")
    loaded.model_version = "4"
    loaded.save()
    with pytest.raises(ResumeError, match="registered model version 4"):
        JobState.for_resume(tmp_path, "digest-a")
    loaded.status = "finished"
    loaded.save()
    with pytest.raises(ResumeError, match="already finished"):
        JobState.for_resume(tmp_path, "digest-a")
    with pytest.raises(ResumeError, match="nothing to resume"):
        JobState.for_resume(tmp_path / "other", "digest-a")


def test_resume_hint(tmp_path):
    assert "nothing was started" in interrupts.resume_hint(None)
    state = JobState.new(tmp_path, "run123", "d")
    assert "--resume to continue" in interrupts.resume_hint(state)
    state.stages_done.append("registration")
    state.save()
    assert interrupts.resume_hint(state).startswith("not resumable:")


def test_stages_are_recorded_and_a_failed_stage_is_not_done(tmp_path, monkeypatch):
    monkeypatch.setattr(interrupts, "_ctl", interrupts._Controller())
    state = JobState.new(tmp_path, "run123", "d")
    interrupts.bind_state(state)
    with interrupts.stage("refit"):
        assert JobState.for_resume(tmp_path, "d").stage == "refit"
    with pytest.raises(ValueError), interrupts.stage("export"):
        raise ValueError
    saved = JobState.for_resume(tmp_path, "d")
    assert saved.stages_done == ["refit"] and saved.stage == "export"


def test_a_stop_ends_only_the_current_jobs_run(tmp_path, monkeypatch):
    """A process that runs two jobs (a notebook, a service): stopping the second must not turn
    the first job's finished run into KILLED."""
    from raylane.tracking import runs
    monkeypatch.setattr(interrupts, "_ctl", interrupts._Controller())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = runs.mlflow_client(uri)
    experiment = open_experiment(client, "two-jobs")
    first = client.create_run(experiment).info.run_id
    interrupts.bind_state(JobState.new(tmp_path / "first", first, "d"))
    interrupts.track_run(uri, first)
    client.set_terminated(first, "FINISHED")
    interrupts.mark_finished("1")

    second = client.create_run(experiment).info.run_id
    interrupts.bind_state(JobState.new(tmp_path / "second", second, "d"))
    interrupts.track_run(uri, second)
    assert interrupts.finish(interrupts.Stopped(signal.SIGTERM, "refit")) == 143
    assert client.get_run(first).info.status == "FINISHED"
    assert client.get_run(second).info.status == "KILLED"


# A Ray worker as a stop finds it: Ray's SIGTERM handler (the one a worker's main loop installs),
# and the signal arriving while a weakref callback runs (the garbage collector runs them anywhere).
WORKER = """
import os, signal, sys, time, weakref
from ray._private.utils import set_sigterm_handler
from ray._raylet import raise_sys_exit_with_custom_error_message

def sigterm_handler(signum, frame):  # as ray._private.worker.Worker.main_loop installs it
    raise_sys_exit_with_custom_error_message("The process receives a SIGTERM.", exit_code=1)

set_sigterm_handler(sigterm_handler)
if sys.argv[1] == "quiet":
    from raylane.training import interrupts
    interrupts.quiet_worker_stop()

class Model:
    pass

def on_collected(ref):
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(100_000):  # the handler runs here, inside the callback
        pass

model = Model()
ref = weakref.ref(model, on_collected)
del model
time.sleep(3)  # the stopped worker runs on (without the hook) or exits here (with it)
print("still running after the stop")
"""


@pytest.mark.parametrize("quiet", [False, True])
def test_a_worker_stopped_inside_a_weakref_callback_exits_without_a_traceback(quiet):
    """Without quiet_worker_stop the worker prints "Exception ignored ... SystemExit" and runs
    on (what reached the job's output); with it, it exits 1 at once and prints nothing."""
    out = subprocess.run([sys.executable, "-c", WORKER, "quiet" if quiet else "plain"],
                         capture_output=True, text=True, timeout=60)
    if quiet:
        assert (out.returncode, out.stdout, out.stderr) == (1, "", ""), out
    else:
        assert "SystemExit" in out.stderr and "Traceback" in out.stderr, out
        assert "still running" in out.stdout and out.returncode == 0
