"""A real `ray start --head` with token auth whose token is handed out explicitly.

The head runs with its own empty HOME and ``RAY_AUTH_TOKEN`` set to a fresh random token, so
nothing of the test's user (``~/.ray/auth_token``) is read or written; clients get the token
from the fixture, the way a deployment hands it out (a CI secret, an Airflow Connection).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.net import free_port, wait_http
from support.paths import BIN
from support.processes import wait_none_naming as ray_processes


@dataclass(frozen=True)
class RayHead:
    url: str  # the dashboard (Job Submission API)
    token: str
    home: Path  # the head's HOME: empty of any token file

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _wait_job_agent(head: RayHead, timeout: float = 120) -> None:
    """Until a job runs: the dashboard answers before its job agent has registered."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(head.url, headers=head.headers)
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = client.submit_job(entrypoint="true")
            break
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)
    while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                             JobStatus.STOPPED):
        assert time.monotonic() < deadline, "the warm-up job never finished"
        time.sleep(0.5)


@pytest.fixture()
def token_ray_head(tmp_path: Path) -> Iterator[RayHead]:
    """A real Ray head with token auth, its own HOME and its own temp dir; stopped by the test
    alone, nothing of it may outlive the test."""
    home = tmp_path / "ray-home"
    home.mkdir()
    token = secrets.token_hex(32)
    port, dash = free_port(), free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="rl-tok-", dir="/tmp"))  # socket paths are capped
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update({"HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"})
    proc = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--temp-dir={temp_dir}",
         f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=true", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}",
         f"--dashboard-agent-grpc-port={free_port()}", f"--metrics-export-port={free_port()}"],
        stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True, cwd=tmp_path, env=env)
    head = RayHead(f"http://127.0.0.1:{dash}", token, home)
    try:
        wait_http(f"{head.url}/api/version", timeout=120)
        _wait_job_agent(head)
        yield head
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left = ray_processes(temp_dir, wait=30)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"the Ray head left processes running: {left}"
        assert not (home / ".ray" / "auth_token").exists()
