"""Fault: the Ray head dies (SIGKILL of its GCS, raylet, dashboard and workers) under one-row
traffic through the worker node's proxy, with and without the Redis that keeps the GCS's state.

Both run ``make serve HA=1``'s layout (``raylane.deploy.local`` with ``--ha``): a head with no
CPUs, one worker node holding the replica and the proxy the client uses, real MLflow registry
(SQLite), real HAProxy ingress.

- With Redis: the head stays dead for :data:`DOWN_S` seconds while the client keeps sending, then
  a new head starts on the same Redis, namespace and GCS port (``restart-head``). No request
  fails, the same replica process answers throughout, Serve's controller comes back with the
  application RUNNING, and a ``serve deploy`` of a changed user_config reaches that replica.
- Without Redis (the GCS in memory), the worker gives up on the GCS after its reconnect timeout
  (``RAY_gcs_rpc_server_reconnect_timeout_s``, 60 s by default, :data:`RECONNECT_S` here): its
  raylet exits, the replica with it, and requests fail from then on.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
import yaml
from support import serving as ss

from raylane.deploy import local

pytestmark = [pytest.mark.slow, pytest.mark.serial, pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed (make test)")]
DOWN_S = 20  # how long the head stays dead under traffic
RECONNECT_S = 10  # the no-Redis worker's GCS reconnect timeout (Ray's default: 60 s)


class Traffic:
    """One client posting one row at a time (at most ~50/s) until stopped; counts the answers,
    and when the first failure came."""

    def __init__(self, url: str, row: dict):
        self.url, self.body = url, {"records": [row]}
        self.ok = self.failed = 0
        self.first_failure: float | None = None
        self.last_failure: float | None = None
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    status = client.post(self.url, json=self.body).status_code
                    why = None if status == 200 else f"HTTP {status}"
                except httpx.HTTPError as exc:
                    why = type(exc).__name__
                if why is None:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.first_failure = self.first_failure or time.monotonic()
                    self.last_failure = time.monotonic()
                    if len(self.errors) < 5:
                        self.errors.append(why)
                    time.sleep(0.2)
                time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)


def serve_config(port: int, log_dir: Path, max_rows: int | None = None) -> dict:
    """One replica of half a CPU, the head's proxy on ``port``."""
    return ss.fixed_replicas_config(port, log_dir, replicas=1, max_rows=max_rows)


def own_processes(state: Path, title: bytes) -> set[int]:
    """Live processes of the cluster under ``state`` whose command line starts with ``title``."""
    pids = set()
    for pid in local.processes_of(state):
        with suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                pids.add(pid)
    return pids


def worker_raylet(state: Path) -> set[int]:
    raylet = str(state / "worker").encode()
    return {pid for pid in local.processes_of(state)
            if (cmd := Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")[0]
            .endswith(b"/raylet") and raylet in cmd}


def running(dashboard: str, app: str = "raylane") -> bool:
    apps = local._status(dashboard, ss.ray_cli_env()).get("applications") or {}
    status = apps.get(app) or {}
    return status.get("status") == "RUNNING"


def wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def answers(url: str, row: dict) -> bool:
    """Whether ``url`` answers a one-row prediction (the worker's proxy starts after the app)."""
    try:
        return httpx.post(url, json={"records": [row]}, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False


def kill_head(state: Path) -> list[int]:
    """SIGKILL every process of the head at once, as when its pod dies."""
    pids = local.head_processes(state)
    names = {Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].rsplit(b"/", 1)[-1]
             for p in pids if Path(f"/proc/{p}").exists()}
    assert {b"gcs_server", b"raylet"} <= names, names
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not local.head_processes(state), "the head's processes to be gone", 30)
    return pids


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """No Ray has run in this HOME: ``make serve`` makes the cluster's token itself."""
    return ss.new_machine_home(tmp_path, monkeypatch)


@pytest.fixture()
def published(tmp_path):
    uri = ss.tracking_uri_for(tmp_path)
    trained = ss.train("credit", n_estimators=20)
    ss.publish_trained(uri, "credit", trained)
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
           for k, v in trained.X.head(1).to_dict("records")[0].items()}
    return uri, row


def _start(tmp_path: Path, uri: str, ha: local.HA) -> tuple[Path, Path, int]:
    head_port = ss.free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(serve_config(head_port, tmp_path / "predictions")))
    state = Path(tempfile.mkdtemp(prefix="rlha", dir="/tmp"))  # short: unix socket paths
    assert local.start(config, uri, state, timeout=240, ha=ha) == 0
    return state, config, head_port


def test_head_loss_with_redis_loses_no_request(tmp_path, published, home):
    uri, row = published
    ha = local.HA.defaults(worker_port=ss.free_port(), worker_cpus=1,
                           dashboard_port=ss.free_port())
    state, config, head_port = _start(tmp_path, uri, ha)
    assert (home / ".ray" / "auth_token").stat().st_mode & 0o077 == 0
    dashboard = f"http://127.0.0.1:{ha['dashboard_port']}"
    url = f"http://127.0.0.1:{ha['worker_port']}/predict"
    try:
        password = (state / "redis" / "password").read_bytes().strip()
        assert (state / "redis" / "password").stat().st_mode & 0o077 == 0
        (redis,) = own_processes(state, b"/usr/bin/redis-server")
        assert password not in Path(f"/proc/{redis}/cmdline").read_bytes()
        wait_for(lambda: len(own_processes(state, b"ray::ServeReplica:")) == 1, "a replica", 60)
        replicas = own_processes(state, b"ray::ServeReplica:")
        wait_for(lambda: answers(url, row), "the worker's proxy to answer", 180)
        with Traffic(url, row) as traffic:
            time.sleep(2)
            killed_at = time.monotonic()
            killed = kill_head(state)
            time.sleep(DOWN_S)
            during = (traffic.ok, traffic.failed)
            assert local.restart_head(state, timeout=120) == 0
            restarted_at = time.monotonic()
            wait_for(lambda: running(dashboard), "the application RUNNING under the new head", 120)
            recovered_at = time.monotonic()
            wait_for(lambda: answers(url, row), "the worker's proxy to answer again", 120)
            time.sleep(2)
        window = [t and round(t - killed_at, 1) for t in (traffic.first_failure,
                                                          traffic.last_failure)]
        print(f"\nwith Redis: head ({len(killed)} processes) down "
              f"{restarted_at - killed_at:.1f}s, Serve RUNNING again "
              f"{recovered_at - killed_at:.1f}s after the kill; requests while down: "
              f"{during[0]} ok, {during[1]} failed; whole run: {traffic.ok} ok, "
              f"{traffic.failed} failed {traffic.errors}, failures from/to (s after the kill): "
              f"{window}", flush=True)
        assert own_processes(state, b"ray::ServeReplica:") == replicas
        # a changed user_config through the new head reaches the same replica: 2 rows > max_rows
        two = {"records": [row, row]}
        assert httpx.post(url, json=two, timeout=30).status_code == 200
        config.write_text(yaml.safe_dump(serve_config(head_port, tmp_path / "predictions", 1)))
        subprocess.run([local._bin("serve"), "deploy", str(config), "-a", dashboard],
                       env=ss.ray_cli_env(), check=True, timeout=120)
        wait_for(lambda: httpx.post(url, json=two, timeout=30).status_code == 400,
                 "the new user_config (max_rows 1) applied", 60)
        assert httpx.post(url, json={"records": [row]}, timeout=30).status_code == 200
        assert own_processes(state, b"ray::ServeReplica:") == replicas
    finally:
        assert local.stop(state) == 0
    assert local.processes_of(state) == []
    assert during[0] > 0
    assert traffic.failed == 0, traffic.errors


def test_head_loss_without_redis_loses_the_worker(tmp_path, published):
    uri, row = published
    ha = local.HA.defaults(redis=False, worker_port=ss.free_port(), worker_cpus=1,
                           reconnect_timeout_s=RECONNECT_S, dashboard_port=ss.free_port())
    state, _, _ = _start(tmp_path, uri, ha)
    url = f"http://127.0.0.1:{ha['worker_port']}/predict"
    try:
        assert not (state / "redis").exists()
        raylet = worker_raylet(state)
        assert len(raylet) == 1, raylet
        wait_for(lambda: answers(url, row), "the worker's proxy to answer", 180)
        with Traffic(url, row) as traffic:
            time.sleep(2)
            killed_at = time.monotonic()
            kill_head(state)
            wait_for(lambda: not worker_raylet(state), "the worker's raylet to exit",
                     RECONNECT_S + 60)
            raylet_gone = time.monotonic() - killed_at
            time.sleep(max(0.0, DOWN_S - raylet_gone))
            replicas_left = own_processes(state, b"ray::ServeReplica:")
        first_failure = traffic.first_failure and traffic.first_failure - killed_at
    finally:
        assert local.stop(state) == 0
    assert local.processes_of(state) == []
    print(f"\nwithout Redis: worker raylet exited {raylet_gone:.1f}s after the head was killed "
          f"(reconnect timeout {RECONNECT_S}s); first failed request at "
          f"{first_failure and round(first_failure, 1)}s; requests: {traffic.ok} ok, "
          f"{traffic.failed} failed {traffic.errors}; replicas left: {len(replicas_left)}")
    assert raylet_gone >= RECONNECT_S - 2, raylet_gone  # it waited for the GCS first
    assert not replicas_left
    assert traffic.failed > 0 and first_failure is not None
