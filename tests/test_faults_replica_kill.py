"""Fault: one of two replicas is SIGKILLed under 64 connections of one-row traffic.

Budget: no timeouts (``TIMEOUT_S``) and no dropped connections; the only failures are requests
that were in flight on the killed replica (at most ``CONNECTIONS``), which is at most 0.1% of the
requests once the service answers 64,000 in the run (the issue's budget; this shared 2-core
machine answers far fewer: the ratio is printed); Ray Serve brings a new replica up.

Real Ray Serve (two replicas, a real MLflow SQLite registry), ``wrk`` for the load (the benchmark
installs it with apt; the test is skipped without it), the kill 6 s into a 30 s run.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import serving_support as ss

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")]
APP = "faults-kill"
URI = "models:/credit@champion"
CONNECTIONS, DURATION_S, KILL_AT_S, TIMEOUT_S = 64, 30, 6, 5
BUDGET = 0.001


def replica_pids() -> set[int]:
    """Pids of the app's live replica processes (Ray titles them ``ray::ServeReplica:<app>:...``;
    the state API needs the dashboard, which the test cluster runs without)."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if cmdline.startswith(f"ray::ServeReplica:{APP}:".encode()) and state != "Z":
            pids.add(int(proc.name))
    return pids


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


def wrk_counts(out: str) -> dict[str, int]:
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = dict(zip(("connect", "read", "write", "timeout"),
                      (int(g) for g in sock.groups()) if sock else (0, 0, 0, 0), strict=True))
    codes = {f"status_{c}": int(n) for c, n in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    return {"total": total, "non_2xx": int(non2xx.group(1)) if non2xx else 0, **errors,
            **codes}


def test_sigkill_one_of_two_replicas_under_load(tmp_path):
    uri = ss.tracking_uri_for(tmp_path)
    trained = ss.train("credit", n_estimators=20)
    ss.publish_trained(uri, "credit", trained)
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
           for k, v in trained.X.head(1).to_dict("records")[0].items()}
    script = tmp_path / "post.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [==[{json.dumps({'records': [row]})}]==]\n" + STATUS_LUA)
    with ss.ray_serve() as base:
        ss.deploy(APP, ss.settings(uri, URI), num_replicas=2,
                  ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=64)
        deadline = time.monotonic() + 120
        while len(replica_pids()) < 2:
            assert time.monotonic() < deadline, "two replicas did not come up"
            time.sleep(0.5)
        url = f"{base}/predict"
        assert httpx.post(url, json={"records": [row]}, timeout=30).status_code == 200

        def wrk(seconds: int) -> subprocess.Popen:
            return subprocess.Popen(
                ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", f"--timeout={TIMEOUT_S}s",
                 "-s", str(script), url], stdout=subprocess.PIPE, text=True)

        wrk(3).communicate(timeout=60)  # warm up both replicas' paths
        before = replica_pids()
        load = wrk(DURATION_S)
        try:
            time.sleep(KILL_AT_S)
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            out, _ = load.communicate(timeout=DURATION_S + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        deadline = time.monotonic() + 180
        while True:  # the replica comes back: two live replicas, one of them new
            now = replica_pids()
            if len(now) == 2 and victim not in now and ss.replica_count(APP) == 2:
                break
            assert time.monotonic() < deadline, f"no replacement replica: {now}"
            time.sleep(1)
        after = httpx.post(url, json={"records": [row]}, timeout=30).status_code
        serve_status = ss.replica_count(APP)

    counts = wrk_counts(out)
    failed = counts["non_2xx"] + counts["connect"] + counts["read"] + counts["write"] + \
        counts["timeout"]
    print(f"\nSIGKILL of 1 of 2 replicas under {CONNECTIONS} connections: {failed} of "
          f"{counts['total']} requests failed ({failed / counts['total']:.4%}): {counts}")
    assert counts["total"] > 2_000, counts  # the service answered throughout
    assert counts["connect"] + counts["read"] + counts["write"] + counts["timeout"] == 0, counts
    assert failed <= max(BUDGET * counts["total"], CONNECTIONS), counts
    assert after == 200 and serve_status == 2
