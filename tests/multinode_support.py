"""Helpers for the multi-node tests: a Ray cluster of several nodes on this machine, driven only
through its dashboard (job submission, Serve REST API, state API), as KubeRay drives a RayCluster.

Everything here stops only what it started: the nodes of a :class:`ray.cluster_utils.Cluster`
(which kills exactly its own processes), or processes found by this cluster's unique session
directory. Never ``ray stop``: other Ray clusters may be running on the same machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Cluster-wide settings a developer's shell may carry; a test cluster must not inherit them.
SCRUB = ("RAY_ADDRESS", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED",
         "MLFLOW_TRACKING_URI")


def node_env(tracking_uri: str) -> dict[str, str]:
    """What every Ray pod of the manifests gets: MLFLOW_TRACKING_URI, and ``python`` on PATH
    (the image's interpreter; here the project's venv, so the job entrypoint is the RayJob's)."""
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """A Ray/Serve CLI command from ``cwd``; the output is kept for assertion messages."""
    return subprocess.run(args, cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def tail(proc: subprocess.CompletedProcess, n: int = 4000) -> str:
    return f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-n:]}\n--- stderr\n{proc.stderr[-n:]}"


@contextmanager
def chdir(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def serve_applications(dashboard: str) -> dict:
    """Serve's REST view of the cluster (what KubeRay polls): apps, deployments, replicas."""
    r = httpx.get(f"{dashboard}/api/serve/applications/", timeout=30)
    r.raise_for_status()
    return r.json()


def wait_serve_running(dashboard: str, app: str, replicas: int, timeout: float = 240) -> dict:
    """Wait until ``app`` is RUNNING with ``replicas`` RUNNING replicas; return its details."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        try:
            last = serve_applications(dashboard).get("applications", {}).get(app) or {}
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (401, 403):  # waiting cannot help: say why
                raise
            last = {}
        except httpx.HTTPError:
            last = {}
        if last.get("status") == "DEPLOY_FAILED":
            raise RuntimeError(f"{app}: {json.dumps(last)[:3000]}")
        running = [r for d in last.get("deployments", {}).values()
                   for r in d.get("replicas", []) if r.get("state") == "RUNNING"]
        if last.get("status") == "RUNNING" and len(running) == replicas:
            return last
        time.sleep(1)
    raise TimeoutError(f"{app} not RUNNING with {replicas} replicas after {timeout}s: "
                       f"{json.dumps(last)[:3000]}")


def session_processes(session_dir: str) -> list[int]:
    """Pids of one Ray cluster's live processes: those whose command line names its session
    directory (GCS, raylets, agents, workers of every node, including nodes an autoscaler started).
    Read from /proc (Linux), so no extra dependency."""
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if session_dir in cmd:
            pids.append(int(entry.name))
    return pids


def kill_session(session_dir: str, grace: float = 10) -> None:
    """SIGTERM, then SIGKILL, every process of the cluster whose session is ``session_dir``."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2)):
        pids = session_processes(session_dir)
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        return ") Z " in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


@contextmanager
def own_address_file(temp_dir: str | Path):
    """Keep this cluster's "current cluster" address file in its own temp dir.

    ``ray.cluster_utils.Cluster`` writes the head's address to the machine-wide
    ``/tmp/ray/ray_current_cluster`` and deletes that file on shutdown, and Ray's job supervisor
    gives the job driver ``RAY_ADDRESS`` from ``<head temp dir>/ray_current_cluster``. On a machine
    where others start Ray clusters, the shared file can name *their* cluster by the time a job
    starts (seen: the driver waited forever on another cluster's GCS), and deleting it breaks
    theirs. Writing and removing the file in the head's own temp dir fixes both.
    """
    import ray._common.utils as common_utils
    import ray._private.utils as private_utils

    saved = private_utils.write_ray_address, common_utils.reset_ray_address
    write, reset = _ORIGINAL_ADDRESS_FUNCS or saved  # nested clusters: never wrap a wrapper
    private_utils.write_ray_address = lambda address, _=None: write(address, str(temp_dir))
    common_utils.reset_ray_address = lambda _=None: reset(str(temp_dir))
    try:
        yield
    finally:
        private_utils.write_ray_address, common_utils.reset_ray_address = saved


def _original_address_funcs():
    try:
        import ray._common.utils as common_utils
        import ray._private.utils as private_utils
    except ImportError:  # pragma: no cover
        return None
    return private_utils.write_ray_address, common_utils.reset_ray_address


_ORIGINAL_ADDRESS_FUNCS = _original_address_funcs()
