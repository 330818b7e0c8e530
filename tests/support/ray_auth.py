"""A real `ray start --head` with token auth whose token is handed out explicitly.

The head runs with its own empty HOME and ``RAY_AUTH_TOKEN`` set to a fresh random token, so
nothing of the test's user (``~/.ray/auth_token``) is read or written; clients get the token
from the fixture, the way a deployment hands it out (a CI secret, an Airflow Connection).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.jobs import ray_head


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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update({"HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    with ray_head(tmp_path, env=env, temp_prefix="rl-tok-") as url:
        head = RayHead(url, token, home)
        _wait_job_agent(head)
        yield head
    assert not (home / ".ray" / "auth_token").exists()
