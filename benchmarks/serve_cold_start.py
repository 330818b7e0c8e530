"""Cold start of the served model, for ``bench_serve``: from ``serve.run`` of the app to its first
answered request, then from a load step to the second replica answering (Serve autoscaling with
``serve/config.yaml``'s ``autoscaling_config``), and a replica's own start by stage.

Times come from two clocks that agree on one machine: the benchmark's (``time.time()`` when it
deploys, starts the load, gets an answer) and the replicas' log lines (Ray Serve's replica log
files: the actor's first line, the load line with its fetch/session/warm-up seconds, each access
log line).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
LOADED = re.compile(r"raylane: loaded \S+ version \S+ .* in ([\d.]+) s: (.*)$")
STAGE = re.compile(r"(\w+) ([\d.]+) s")


def autoscaling_config() -> dict:
    """``serve/config.yaml``'s autoscaling, as deployed."""
    config = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    return config["applications"][0]["deployments"][0]["autoscaling_config"]


def stamp(line: str) -> float | None:
    """The epoch seconds of a Serve log line, text or JSON (its local-time stamp), or None."""
    if line.startswith("{"):
        try:
            text = json.loads(line).get("asctime")
        except ValueError:
            return None
    else:
        text = m.group(1) if (m := STAMP.match(line)) else None
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp() if text else None


def message(line: str) -> str:
    """A log line's message (JSON lines hold it in ``message``)."""
    if line.startswith("{"):
        try:
            return str(json.loads(line).get("message", ""))
        except ValueError:
            return ""
    return line


def replica_logs(session_dir: Path, app: str) -> list[Path]:
    return sorted((session_dir / "logs" / "serve").glob(f"replica_{app}_*.log"))


def first_line(path: Path, needle: str = "") -> float | None:
    """The time of the first line of ``path`` holding ``needle``."""
    for line in path.read_text(errors="replace").splitlines():
        if needle in line and (at := stamp(line)) is not None:
            return at
    return None


def load_stages(path: Path) -> dict[str, float] | None:
    """The replica's load line: its total and per-stage seconds."""
    for line in path.read_text(errors="replace").splitlines():
        if m := LOADED.search(message(line)):
            return {"total": float(m.group(1)),
                    **{k: float(v) for k, v in STAGE.findall(m.group(2))}}
    return None


def replica_states(app: str) -> dict[str, int]:
    """The app's replicas by state, from Serve's controller."""
    from ray import serve

    status = serve.status().applications[app]
    (deployment,) = status.deployments.values()
    return {str(state): n for state, n in deployment.replica_states.items()}


def since(at: float | None, start: float) -> float | None:
    return None if at is None else round(at - start, 3)


def first_answer(url: str, body: bytes, timeout: float = 300) -> float:
    """Poll ``url`` with ``body`` until a 200; the time of that answer."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                r = client.post(url, content=body, headers={"content-type": "application/json"})
                if r.status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"no 200 from {url} in {timeout:g} s")


def measure(deploy, url: str, one: bytes, session_dir: Path, app: str, wrk_cmd: list[str],
            load_s: int) -> dict:
    """``deploy()`` runs ``serve.run`` of the app (blocking until it is RUNNING); then ``wrk_cmd``
    is the load step. Returns seconds: deploy to first answer, to ``serve.run`` returning, the
    replica's start by stage, and load step to the second replica's first answer."""
    before = set(replica_logs(session_dir, app))
    done: dict = {}

    def run() -> None:
        try:
            deploy()
        finally:
            done["at"] = time.time()

    started = time.time()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    answered = first_answer(url, one)
    thread.join(300)
    (log,) = [p for p in replica_logs(session_dir, app) if p not in before]
    result = {
        "deploy_to_first_answer_s": round(answered - started, 3),
        "deploy_to_serve_run_returned_s": round(done["at"] - started, 3),
        "deploy_to_replica_first_log_line_s": since(first_line(log), started),
        "replica_load_s": load_stages(log),
        "autoscaling_config": autoscaling_config(),
    }
    time.sleep(2)

    # the load step: wrk's connections ask for more than one replica's target_ongoing_requests
    known = set(replica_logs(session_dir, app))
    step = time.time()
    wrk = subprocess.Popen(wrk_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    second = None
    replicas: list[tuple[float, dict]] = []  # (seconds since the step, replicas by state)
    deadline = time.monotonic() + load_s + 5
    while second is None and time.monotonic() < deadline:
        time.sleep(0.5)
        states = replica_states(app)
        if not replicas or replicas[-1][1] != states:
            replicas.append((round(time.time() - step, 1), states))
        for path in set(replica_logs(session_dir, app)) - known:
            if (at := first_line(path, "POST /predict")) is not None:
                second = (path, at)
    wrk.wait(load_s + 60)
    result["replicas_after_the_step"] = replicas
    if second is not None:
        path, at = second
        result.update({
            "load_step_to_second_replica_answering_s": since(at, step),
            "load_step_to_second_replica_first_log_line_s": since(first_line(path), step),
            "second_replica_load_s": load_stages(path),
        })
    else:
        result["load_step_to_second_replica_answering_s"] = None
    return result
