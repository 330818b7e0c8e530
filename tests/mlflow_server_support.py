"""A real `mlflow server` process that a test can stop and start again (an outage, a restart):
same port, same store, so clients configured with its URL carry on when it is back."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import BIN, free_port, wait_http


class Server:
    """One `mlflow server` on a fixed port and store (SQLite, proxied artifacts) under ``home``,
    that can be stopped and started again."""

    def __init__(self, home: Path):
        self.home, self.port = home, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.home / "server.log", "a")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.home / 'mlflow.db'}",
             "--artifacts-destination", str(self.home / "artifacts"), "--serve-artifacts",
             "--workers", "1"],
            cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        log.close()
        wait_http(f"{self.url}/health", timeout=120)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
