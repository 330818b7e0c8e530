"""Shared fixtures: real MLflow stores (SQLite and a `mlflow server` process), free ports, data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CREDIT_CSV = ROOT / "data" / "credit_data.csv"
DIAMONDS_CSV = SHARED_DATA / "diamonds.csv"
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
