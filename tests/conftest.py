"""Shared fixtures: real MLflow stores (SQLite and a `mlflow server` process), free ports, data,
and the session check that the suite leaves nothing running (tests/leftovers.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import leftovers
import pytest

SESSION = leftovers.mark_session()  # before any test starts a process: children inherit it
ROOT = Path(__file__).resolve().parents[1]
CREDIT_CSV = ROOT / "data" / "credit_data.csv"
DIAMONDS_CSV = ROOT / "data" / "diamonds_sample.csv"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {timeout:.0f}s")


@pytest.fixture(scope="session", autouse=True)
def leaves_nothing_behind():
    """Fail the run if, at its end, a process the suite started is still alive (Ray, HAProxy,
    MLflow/uvicorn servers, ...) or Ray's ``ray_current_cluster`` file names a cluster of ours."""
    before = leftovers.snapshot(SESSION)
    yield
    found = leftovers.leftovers(SESSION, before)
    if found:
        pytest.fail("the test session left behind:\n  " + "\n  ".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def unit_tests_start_no_ray(request):
    """tests/unit/ is the fast loop: a test there must not leave a Ray instance up."""
    yield
    if "unit" in request.path.relative_to(ROOT / "tests").parts[:-1]:
        ray = sys.modules.get("ray")
        assert ray is None or not ray.is_initialized(), "a unit test started Ray"


@pytest.fixture()
def sqlite_uri(tmp_path: Path) -> str:
    """An embedded MLflow store in a fresh directory (absolute, so Ray workers find it)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` over HTTP with proxied artifacts, as a cluster would use."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(home / "server.log", "w")  # noqa: SIM115 - the server writes to it until teardown
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts"), "--serve-artifacts",
         "--workers", "1"],
        cwd=home, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=90)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
