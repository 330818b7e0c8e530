"""Fault: one of two replicas is SIGKILLed under 64 connections of one-row traffic.

Budget: at most 0.1% of the requests, and at most 2, fail, timeouts included, as the client
counts them over the whole run (the kill ~5 s into 25 s of load, the replacement coming up
inside it); the killed replica comes back (a new replica process, two replicas RUNNING, both
in HAProxy's backend) and the traffic after recovery is 100% OK.

It runs the serving setup users run: ``raylane.deploy.local`` (``make serve``: ``ray start`` with
the RayService's cluster env, HAProxy ingress, then ``serve deploy`` of ``serve/config.yaml``
with only the replica count, CPUs, ports and file locations changed). Real MLflow registry
(SQLite), real replicas, ``wrk`` for the load (skipped without it). Requests in flight on the
killed replica get no answer from it; HAProxy replays them on the other replica
(``RAY_SERVE_HAPROXY_RETRY_ON`` in the cluster env), so the client never sees them fail.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from support import serving as ss

from raylane.deploy import local

pytestmark = [pytest.mark.slow, pytest.mark.serial,
              pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")]
CONNECTIONS, DURATION_S, KILL_AT_S, TIMEOUT_S, AFTER_S = 64, 25, 5, 5, 5
BUDGET = 0.001
UNREPLAYABLE_MAX = 2  # answers under way on the killed replica: see the last asserts
DASHBOARD = f"http://127.0.0.1:{local.DASHBOARD_PORT}"

# count the answers by status code in every wrk thread, and print the totals at the end
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {} end
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\\n", k, v)) end
end
"""


def serve_config(port: int, log_dir: Path) -> dict:
    """Two fixed replicas of half a CPU, on ``port``."""
    return ss.fixed_replicas_config(port, log_dir, replicas=2)


def replica_pids(state: Path) -> set[int]:
    """Live replica processes of the cluster under ``state`` (titled ``ray::ServeReplica:...``)."""
    pids = set()
    for pid in local.processes_of(state):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ServeReplica:"):
                pids.add(pid)
        except OSError:
            continue
    return pids


def running_replicas() -> int:
    apps = local._status(DASHBOARD, ss.ray_cli_env()).get("applications") or {}
    return sum((d.get("replica_states") or {}).get("RUNNING", 0)
               for app in apps.values() for d in (app.get("deployments") or {}).values())


def replica_servers(state: Path) -> list[dict]:
    """HAProxy's rows for the replicas (not the backup Python proxy), from its admin socket;
    none while a reload replaces the socket."""
    try:
        (sock_path,) = state.glob("*/admin.sock")
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock_path))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except (OSError, ValueError):
        return []
    rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
    return [r for r in rows if r["svname"] not in ("FRONTEND", "BACKEND") and r["bck"] == "0"
            and r["pxname"] not in ("stats", "prometheus", "default_backend")]


def wrk_counts(out: str) -> dict[str, int]:
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = dict(zip(("connect", "read", "write", "timeout"),
                      (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0), strict=True))
    codes = {f"status_{c}": int(n) for c, n in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    counts = {"total": total, "non_2xx": int(non2xx.group(1)) if non2xx else 0, **errors, **codes}
    counts["failed"] = sum(counts[k] for k in ("non_2xx", "connect", "read", "write", "timeout"))
    return counts


def wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_sigkill_one_of_two_replicas_under_load(tmp_path, monkeypatch):
    home = ss.new_machine_home(tmp_path, monkeypatch)  # `make serve` makes the cluster's token
    uri = ss.tracking_uri_for(tmp_path)
    trained = ss.train("credit", n_estimators=20)
    ss.publish_trained(uri, "credit", trained)
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
           for k, v in trained.X.head(1).to_dict("records")[0].items()}
    script = tmp_path / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [==[{json.dumps({'records': [row]})}]==]\n" + STATUS_LUA)
    port = ss.free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(serve_config(port, tmp_path / "predictions")))
    url = f"http://127.0.0.1:{port}/predict"

    def wrk(seconds: int) -> subprocess.Popen:
        return subprocess.Popen(
            ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", f"--timeout={TIMEOUT_S}s",
             "-s", str(script), url], stdout=subprocess.PIPE, text=True)

    state = Path(tempfile.mkdtemp(prefix="rlkill", dir="/tmp"))  # short: unix socket paths
    try:
        assert local.start(config, uri, state, timeout=240) == 0
        assert (home / ".ray" / "auth_token").stat().st_mode & 0o077 == 0
        wait_for(lambda: len(replica_pids(state)) == 2, "two replica processes", 60)
        assert httpx.post(url, json={"records": [row]}, timeout=30).status_code == 200
        wrk(3).communicate(timeout=60)  # warm both replicas' paths
        before = replica_pids(state)
        load = wrk(DURATION_S)
        try:
            time.sleep(KILL_AT_S)
            # kill while both replicas hold requests (HAProxy: current sessions on each server)
            def both_busy() -> bool:
                rows = replica_servers(state)
                return len(rows) == 2 and all(int(r["scur"]) > 0 for r in rows)

            wait_for(both_busy, "requests in flight on both replicas", 10)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            out, _ = load.communicate(timeout=DURATION_S + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        during = wrk_counts(out)

        def recovered() -> bool:
            now = replica_pids(state)
            return (len(now) == 2 and victim not in now and running_replicas() == 2
                    and sum(r["status"] == "UP" for r in replica_servers(state)) == 2)

        wait_for(recovered, "a replacement replica RUNNING and UP in HAProxy", 120)
        after_out, _ = wrk(AFTER_S).communicate(timeout=AFTER_S + 60)
        after = wrk_counts(after_out)
        wait_for(lambda: len(replica_servers(state)) == 2, "HAProxy's stats", 10)
        served = {r["svname"]: int(r["stot"]) for r in replica_servers(state)}
    finally:
        assert local.stop(state) == 0
    assert local.processes_of(state) == []

    print(f"\nSIGKILL of 1 of 2 replicas under {CONNECTIONS} connections: {during['failed']} of "
          f"{during['total']} requests failed ({during['failed'] / during['total']:.4%}): "
          f"{during}; after recovery: {after}; served by replica since reload: {served}")
    assert during["total"] >= 1000, during  # the service answered throughout the run
    assert during["failed"] <= BUDGET * during["total"], during
    # and next to none, however fast the machine: HAProxy replays the requests the killed replica
    # dropped without an answer; what it cannot replay is an answer already under way when the
    # process died (nor can any proxy once it has forwarded part of it), one or two at most.
    # Without the replays 37 of 61,400 failed here (the ~32 requests in flight on the replica),
    # and the Python proxy's 20 of 6,755 missed the 0.1% budget on a slower run. Measured with
    # replays: 0 in most runs, 1 read error in 36,108 in one.
    assert during["failed"] <= UNREPLAYABLE_MAX, during
    assert after["failed"] == 0 and after["total"] > 0, after
    assert len(served) == 2 and all(n > 0 for n in served.values()), served  # both serve
