"""Clean stops: SIGINT (Ctrl-C) and SIGTERM (`ray job stop`, KubeRay deadlines) at any stage.

The job calls :func:`install` first and wraps each stage in ``with stage("refit"):``. A signal

- inside the search (``with deferred():`` around ``tuner.fit()``) asks Tune to stop gracefully
  (Tune's SIGUSR1) so it saves its state; :func:`raise_if_requested` raises afterwards;
- anywhere else raises :class:`Stopped` (a ``BaseException``, so ``except Exception`` in a
  library does not swallow it) at once.

:func:`finish` then ends the MLflow runs registered with :func:`track_run` as KILLED, shuts down
the Ray the job started, marks the resume state and prints one line; the job exits 128 + signal
(130, 143). A second signal exits at once.

The resume state (:class:`JobState`, ``raylane_state.json`` in the run directory) records the
parent run, the dataset digest and the stages done, so ``--resume`` continues or says why not.

Test-only hooks (no effect unless set): ``RAYLANE_TEST_HOLD`` is a comma-separated list of
stage names (plus ``trial`` for the second trial's first result, and ``stopping``); on reaching
one the job writes ``$RAYLANE_TEST_HOLD_DIR/<name>.reached`` (JSON: what reached it) and waits
until ``<name>.go`` exists or it is stopped. Tests use them to signal at a known point without
timing luck.
"""

from __future__ import annotations

import _thread
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "raylane_state.json"
SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Stages after which a model version exists: resuming would register a second one.
_REGISTERED = "registration"


class Stopped(BaseException):
    """The job was stopped by ``signum`` during ``stage``."""

    def __init__(self, signum: int, stage: str):
        super().__init__(f"stopped by {signal.Signals(signum).name} during {stage}")
        self.signum, self.stage = signum, stage

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class ResumeError(RuntimeError):
    """``--resume`` cannot continue; the message says why."""


# --- the resume state


@dataclass
class JobState:
    """What ``--resume`` needs to know about a started job, kept in its run directory."""

    path: Path
    parent_run_id: str
    dataset_digest: str
    stages_done: list[str] = field(default_factory=list)
    stage: str | None = None
    status: str = "running"  # running, stopped, finished
    stopped_by: str | None = None
    model_version: str | None = None

    def done(self, stage_name: str) -> bool:
        return stage_name in self.stages_done

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.path)  # atomic: a stop mid-write leaves the old state

    @classmethod
    def new(cls, run_dir: Path, parent_run_id: str, dataset_digest: str) -> JobState:
        run_dir.mkdir(parents=True, exist_ok=True)
        state = cls(run_dir / STATE_FILE, parent_run_id, dataset_digest)
        state.save()
        return state

    @classmethod
    def for_resume(cls, run_dir: Path, dataset_digest: str) -> JobState:
        """The saved state of ``run_dir``, or ResumeError saying why it cannot be resumed."""
        path = run_dir / STATE_FILE
        if not path.exists():
            raise ResumeError(
                f"{run_dir} has no {STATE_FILE}: the last job stopped before its search started "
                "(nothing to resume); run the command without --resume")
        data = json.loads(path.read_text())
        state = cls(path=path, **data)
        if state.dataset_digest != dataset_digest:
            raise ResumeError(
                f"the data changed: the stopped job in {run_dir} used a dataset with digest "
                f"{state.dataset_digest}, this one has {dataset_digest}; run without --resume "
                "to start a new search on it")
        if state.status == "finished":
            raise ResumeError(f"the job in {run_dir} already finished (model version "
                              f"{state.model_version}); nothing to resume")
        if state.done(_REGISTERED):
            raise ResumeError(
                f"the job in {run_dir} stopped after it registered model version "
                f"{state.model_version}; resuming would register another. Promote that version "
                "by hand or run without --resume")
        return state


def resume_hint(state: JobState | None) -> str:
    if state is None:
        return "nothing was started; run the command again"
    try:
        JobState.for_resume(state.path.parent, state.dataset_digest)
    except ResumeError as exc:
        return f"not resumable: {exc}"
    return (f"state saved in {state.path.parent}; run the same command with --resume to "
            "continue")


# --- the stop controller (one per process, driven from the main thread)


class _Controller:
    def __init__(self) -> None:
        self.stage = "startup"
        self.signum: int | None = None
        self.deferring = False
        self.forwarded = False
        self.state: JobState | None = None
        self.runs: list[tuple[str, str]] = []  # (tracking URI, run id) to end as KILLED


_ctl = _Controller()


def _on_signal(signum: int, frame) -> None:
    if _ctl.signum is not None:  # the second signal: no cleanup, no waiting
        os.write(2, f"stopped at once by a second {signal.Signals(signum).name} during "
                    f"{_ctl.stage}\n".encode())
        os._exit(128 + signum)
    _ctl.signum = signum
    if _ctl.deferring:
        forward_to_tune()
    else:
        raise Stopped(signum, _ctl.stage)


def _on_usr1(signum: int, frame) -> None:
    """Placeholder until Tune installs its own: SIGUSR1's default action would kill us."""


def forward_to_tune() -> None:
    """Pass a stop inside the search on to Tune, which stops gracefully (saving its state) on
    SIGUSR1, once Tune's handler is in place; at most once per search."""
    if not (_ctl.deferring and requested()) or _ctl.forwarded:
        return
    if signal.getsignal(signal.SIGUSR1) in (_on_usr1, signal.SIG_DFL, None):
        return
    _ctl.forwarded = True
    os.kill(os.getpid(), signal.SIGUSR1)


def install() -> None:
    """Take over SIGINT and SIGTERM (again: ``ray.init`` replaces the SIGTERM handler)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in SIGNALS:
        if signal.getsignal(signum) is not _on_signal:
            signal.signal(signum, _on_signal)
    if signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGUSR1, _on_usr1)


def quiet_worker_stop() -> None:
    """In a Ray worker (a trial): let a stop end it without a traceback in the job's output.

    Ray stops a worker with SIGTERM, and its handler raises SystemExit. When the signal lands
    inside a weakref callback or a ``__del__`` (the garbage collector runs them anywhere),
    Python cannot propagate the exception: it prints "Exception ignored in ... SystemExit: 1"
    with a traceback to the worker's stderr, which Ray forwards to the job's output, and the
    worker runs on. Here such a SystemExit is not printed but raised again where it can
    propagate: SIGTERM is sent again, so Ray's handler runs once the callback is over and the
    worker exits as Ray asked. Every other unraisable exception is reported as before."""
    previous = sys.unraisablehook
    if getattr(previous, "quiet_worker_stop", False):
        return

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, SystemExit) and callable(
                signal.getsignal(signal.SIGTERM)):
            # Sent from another thread: the main thread runs the handler once this callback is
            # over (sent from here, Python would run it at once, inside this hook; the low-level
            # start does not wait for the thread, a wait would run it too).
            with contextlib.suppress(RuntimeError):  # no new threads at interpreter exit
                _thread.start_new_thread(os.kill, (os.getpid(), signal.SIGTERM))
            return
        previous(unraisable)

    hook.quiet_worker_stop = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def requested() -> bool:
    return _ctl.signum is not None


def raise_if_requested() -> None:
    if _ctl.signum is not None:
        raise Stopped(_ctl.signum, _ctl.stage)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Mark ``name`` as the current stage (for the stop line and the resume state)."""
    install()
    raise_if_requested()
    _ctl.stage = name
    if _ctl.state is not None:
        _ctl.state.stage = name
        _ctl.state.save()
    hold(name)
    yield
    install()
    if _ctl.state is not None and name not in _ctl.state.stages_done:
        _ctl.state.stages_done.append(name)
        _ctl.state.save()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, a signal asks Tune to stop gracefully instead of raising; it raises after."""
    install()
    raise_if_requested()
    _ctl.deferring, _ctl.forwarded = True, False
    try:
        yield
    finally:
        _ctl.deferring = False
    raise_if_requested()


def bind_state(state: JobState) -> None:
    """Start a job: keep ``state`` up to date with the stages and the stop, and forget the runs
    an earlier job in this process tracked (a stop must not end those as KILLED)."""
    state.status, state.stopped_by = "running", None
    state.save()
    _ctl.state = state
    _ctl.runs = []


def track_run(tracking_uri: str, run_id: str) -> None:
    """End this MLflow run as KILLED if the job is stopped (fluent or client-created alike)."""
    _ctl.runs.append((tracking_uri, run_id))


def finish(stop: Stopped) -> int:
    """After a stop: end the tracked runs as KILLED, shut Ray down, print the line, exit code."""
    _ctl.signum = stop.signum  # a signal from now on exits at once
    _ctl.stage = stop.stage
    hold("stopping")
    if _ctl.state is not None:
        _ctl.state.status, _ctl.state.stopped_by = "stopped", signal.Signals(stop.signum).name
        _ctl.state.save()
    _end_runs("KILLED")
    with contextlib.suppress(Exception):
        import ray

        if ray.is_initialized():
            ray.shutdown()  # stops the local Ray the job started; detaches from a cluster's
    print(f"{stop}; {resume_hint(_ctl.state)}", file=sys.stderr, flush=True)
    return stop.exit_code


def mark_finished(model_version: str | None) -> None:
    if _ctl.state is not None:
        _ctl.state.status, _ctl.state.model_version = "finished", model_version
        _ctl.state.save()


def mark_registered(model_version: str) -> None:
    if _ctl.state is not None:
        _ctl.state.model_version = model_version
        _ctl.state.save()


def _end_runs(status: str) -> None:
    from mlflow import MlflowClient

    with contextlib.suppress(Exception):
        import mlflow

        while mlflow.active_run():
            mlflow.end_run(status)
    for uri, run_id in _ctl.runs:
        try:
            MlflowClient(tracking_uri=uri).set_terminated(run_id, status=status)
        except Exception as exc:  # still stop; say which run is left as it was
            print(f"warning: could not end MLflow run {run_id} as {status}: {exc}",
                  file=sys.stderr)


# --- test-only hold points


def hold(name: str, detail: dict | None = None) -> None:
    """Wait at ``name`` if ``RAYLANE_TEST_HOLD`` lists it (tests only); a stop ends the wait.
    ``detail`` (what reached the hold, e.g. a trial's pid) is the ``.reached`` file's JSON."""
    names = os.environ.get("RAYLANE_TEST_HOLD", "")
    if not names or name not in names.split(","):
        return
    hold_dir = Path(os.environ["RAYLANE_TEST_HOLD_DIR"])
    staged = hold_dir / f".{name}.reached"  # renamed into place: never read half-written
    staged.write_text(json.dumps(detail or {}))
    staged.replace(hold_dir / f"{name}.reached")
    while not (hold_dir / f"{name}.go").exists():
        if _ctl.deferring and requested():
            return  # inside the search: let Tune stop
        time.sleep(0.05)
