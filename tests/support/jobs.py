"""Running the training job as a real process and stopping it at a known point.

The job's test-only hold points (``RAYLANE_TEST_HOLD``, see ``raylane.training.interrupts``) make
it wait at a
stage, or inside the search, until a file appears; the test signals it while it waits.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from support.net import free_port, wait_http
from support.paths import BIN, CREDIT_CSV, ROOT
from support.processes import wait_none_naming

# A small, quick search: three trials one after another, none stopped early.
QUICK = ["--set", "tune.num_samples=3", "--set", "tune.max_concurrent_trials=1",
         "--set", "tune.search_alg=random", "--set", "tune.scheduler.type=fifo",
         "--set", "model.params.n_estimators=40", "--set", "model.search_space.n_estimators=40"]


def ray_job_submit(cmd: list[str], cwd: Path, env: dict | None = None
                   ) -> tuple[subprocess.CompletedProcess, str]:
    """Run a `ray job submit` command line; retried while the dashboard answers before its job
    agent has registered ("No available agent"). The process and its whole output."""
    env = env if env is not None else {**os.environ, "RAY_AUTH_MODE": "token"}
    for _ in range(20):
        out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        log = out.stdout + out.stderr
        if "No available agent" not in log:
            break
        time.sleep(3)
    return out, log


def job_args(tmp_path: Path, tracking_uri: str, experiment: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ray_jobs.train_pipeline", "--config",
            str(ROOT / "tune_configs" / "credit_xgboost.yaml"),
            "--set", f"data.path={CREDIT_CSV}", *QUICK,
            "--set", f"mlflow.tracking_uri={tracking_uri}",
            "--set", f"mlflow.experiment={experiment}",
            "--set", f"tune.storage_path={tmp_path / 'ray_results'}", *extra]


@contextmanager
def ray_tmpdir() -> Iterator[Path]:
    """A short RAY_TMPDIR (socket paths are limited to ~107 bytes) that names the job's Ray
    processes, so a test can tell whether any outlived the job."""
    path = Path(tempfile.mkdtemp(prefix="rl-stop-", dir="/tmp"))
    try:
        yield path
    finally:
        left = wait_none_naming(path, wait=30)
        assert not left, f"Ray processes left running: {left}"
        shutil.rmtree(path, ignore_errors=True)


class Job:
    """One run of the training job with its output in ``log``."""

    def __init__(self, args: list[str], cwd: Path, log: Path, hold: str = "",
                 hold_dir: Path | None = None, ray_dir: Path | None = None,
                 env: dict[str, str] | None = None):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        env.pop("RAY_ADDRESS", None)
        if hold:
            env.update(RAYLANE_TEST_HOLD=hold, RAYLANE_TEST_HOLD_DIR=str(hold_dir))
        if ray_dir:
            env["RAY_TMPDIR"] = str(ray_dir)
        self.log, self.hold_dir = log, hold_dir
        self._out = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(args, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT,
                                     env=env)

    def text(self) -> str:
        return self.log.read_text()

    def wait_reached(self, name: str, timeout: float = 300) -> None:
        """Until the job waits at hold point ``name`` (fails if it exits first)."""
        marker = self.hold_dir / f"{name}.reached"
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert self.proc.poll() is None, f"job exited before {name}:\n{self.text()[-4000:]}"
            assert time.monotonic() < deadline, f"job never reached {name}:\n{self.text()[-4000:]}"
            time.sleep(0.2)

    def release(self, name: str) -> None:
        """Let the job go on from hold point ``name``."""
        (self.hold_dir / f"{name}.go").touch()

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._out.close()


def run_job(args: list[str], cwd: Path, ray_dir: Path | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ}
    env.pop("RAY_ADDRESS", None)
    if ray_dir:
        env["RAY_TMPDIR"] = str(ray_dir)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def stop_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("stopped ")]


def assert_clean_stop(job: Job, code: int, where: str, resumable: bool) -> str:
    """Exit ``code``, exactly one line saying it stopped during ``where``, no traceback."""
    log = job.text()
    lines = stop_lines(log)
    assert len(lines) == 1, log[-4000:]
    assert lines[0].startswith(f"stopped by SIG{'INT' if code == 130 else 'TERM'} during {where};")
    assert ("--resume to continue" in lines[0]) == resumable, lines[0]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-4000:]
    assert "Exception ignored" not in log, log[-4000:]
    return lines[0]


def runs(client: MlflowClient, experiment: str, role: str | None = None) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    query = f"tags.`raylane.role` = '{role}'" if role else ""
    found = client.search_runs([exp.experiment_id], query)
    if role is None:  # the job's parent runs
        found = [r for r in found if r.data.tags.get("raylane.role") != "trial"]
    return found


@contextmanager
def ray_head(scratch: Path, env: dict[str, str] | None = None,
             temp_prefix: str = "rl-job-") -> Iterator[str]:
    """A real `ray start --head` in its own process group (its log in ``scratch``); its
    dashboard URL. Nothing of it may outlive the context (the ``ray_head`` fixtures of
    tests/conftest.py: one for the session, one fresh for a test that needs an empty cluster;
    tests/support/ray_auth.py: one with token auth and its own HOME). ``env`` replaces the
    inherited environment.

    Its own temp dir (short: unix socket paths are capped): `ray start` writes the cluster's
    address to ``<temp dir>/ray_current_cluster``, and a SIGTERM'd `ray start --block` never
    removes it. In the default /tmp/ray it would send a later `ray.init()` / `serve run` to
    this dead cluster."""
    port, dash = free_port(), free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix=temp_prefix, dir="/tmp"))
    base = os.environ if env is None else env
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp_dir}",
         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", f"--ray-client-server-port={free_port()}",
         # own agent ports: another Ray on this machine may hold the defaults (52365)
         f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}"],
        stdout=open(scratch / "head.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True, cwd=scratch,
        env={**base,
             # as with an activated virtualenv: the job's `python` is the one Ray runs on
             "PATH": f"{BIN}{os.pathsep}{base['PATH']}",
             # On SIGTERM `ray start --block` first drains its node (for Serve on KubeRay) through
             # the GCS, which the process-group SIGTERM below has already stopped: it would wait
             # out the whole drain timeout (30 s) before stopping its processes.
             "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        wait_http(f"{url}/api/version", timeout=120)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = wait_none_naming(temp_dir, wait=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"the Ray head left processes running: {left}"
