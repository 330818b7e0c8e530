"""Helpers for the multi-node tests: a Ray cluster of several nodes on this machine, driven only
through its dashboard (job submission, Serve REST API, state API), as KubeRay drives a RayCluster.

Everything here stops only what it started: the nodes of a :class:`ray.cluster_utils.Cluster`
(which kills exactly its own processes), or processes found by this cluster's unique session
directory. Never ``ray stop``: other Ray clusters may be running on the same machine.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from raylane.deploy import processes as procs
from support.net import free_port, wait_http
from support.paths import BIN

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


def require_multinode_host() -> None:
    """Skip off Linux (multi-node Ray on one machine is tested there); fail when an earlier test
    left a driver or a Serve client in this process: the nodes are spawned from it, and nothing
    of an earlier test may leak into them."""
    import pytest

    from support.environ import driver_state

    if not sys.platform.startswith("linux"):
        pytest.skip("multi-node Ray on one machine is tested on Linux")
    left = driver_state()
    if left:
        pytest.fail(f"an earlier test left process state behind: {left}", pytrace=False)


@contextmanager
def two_node_cluster(tracking_uri: str, scratch: Path, system_config: dict | None = None):
    """A head with 0 CPUs (GCS, dashboard, job drivers; never trials, as the manifest's head) and
    one worker node with 2 CPUs, started from ``scratch`` (not the repo), with
    MLFLOW_TRACKING_URI on every node. Yields a dict: ``cluster`` (its
    :class:`ray.cluster_utils.Cluster`), ``dashboard`` (URL), ``head`` / ``worker`` (node ids),
    ``worker_node``, ``disks`` (the nodes' temp dirs' parent), ``env`` (the nodes' env vars).

    Each node gets its own temp dir (session, logs, runtime-env cache, spill), as each pod has its
    own disk. Sharing one would let the worker's runtime-env agent delete the uploaded working
    dir the driver on the head runs in, once the trials that used it end (seen: the job then
    fails in Tune with FileNotFoundError from os.getcwd()). Short paths: Unix sockets live there.
    """
    from ray.cluster_utils import Cluster

    disks = Path(tempfile.mkdtemp(prefix="rlmn-", dir="/tmp"))
    env = node_env(tracking_uri)
    dashboard_port = free_port()
    cluster = None
    head_args = {
        "num_cpus": 0, "gcs_server_port": free_port(), "include_dashboard": True,
        "dashboard_port": dashboard_port, "env_vars": env, "temp_dir": str(disks / "head"),
        # own agent ports: another Ray on the machine may hold the defaults, and then the job
        # agent never registers ("No available agent")
        "dashboard_agent_listen_port": free_port(), "metrics_export_port": free_port(),
    }
    if system_config:
        head_args["_system_config"] = system_config
    address_file = own_address_file(disks / "head")
    address_file.__enter__()
    try:
        with chdir(scratch):
            for attempt in range(2):  # a loaded shared machine can be slow to start a node
                try:
                    cluster = Cluster(initialize_head=True, head_node_args=head_args)
                    worker = add_worker(cluster, env, disks / "worker")
                    break
                except TimeoutError:
                    if cluster is not None:
                        cluster.shutdown()
                        cluster = None
                    if attempt:
                        raise
        cluster.wait_for_nodes(timeout=60)
        dashboard = f"http://{cluster.head_node.webui_url}"
        wait_http(f"{dashboard}/api/version", timeout=60)
        yield {"cluster": cluster, "dashboard": dashboard, "head": cluster.head_node.node_id,
               "worker": worker.node_id, "worker_node": worker, "disks": disks, "env": env}
    finally:
        if cluster is not None:
            cluster.shutdown()
        address_file.__exit__(None, None, None)
        shutil.rmtree(disks, ignore_errors=True)


def cluster_view(dashboard: str) -> str:
    """Every actor and node the cluster's state API lists, and the Ray address variables this
    process has (they override an explicit address in Ray's clients): for failure messages."""
    from ray.util.state import list_actors, list_nodes

    env = {k: v for k, v in os.environ.items() if k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    try:
        actors = [(a.class_name, a.state, a.node_id, a.pid, a.job_id)
                  for a in list_actors(address=dashboard, detail=True, limit=1000)]
        nodes = [(n.node_id, n.state, n.is_head_node) for n in list_nodes(address=dashboard)]
    except Exception as exc:  # the view is for a message: say why it is missing
        return f"state API at {dashboard} failed: {exc!r}; env {env}"
    return f"state API at {dashboard}; env {env}\nactors: {actors}\nnodes: {nodes}"


def trial_actors(dashboard: str, state: str | None = None, timeout: float = 30) -> list:
    """Tune's trial actors (``ImplicitFunc``; in ``state`` if given) as the cluster's state API
    lists them, asked again for up to ``timeout`` s while it lists none; AssertionError with
    :func:`cluster_view` if it never lists one.

    The class is matched on its last dotted part: Ray names it ``ImplicitFunc`` or by its
    qualified name, ``wrap_function.<locals>.ImplicitFunc``, depending on how the worker got the
    class, so an exact ``class_name`` filter misses trials that ran."""
    from ray.util.state import list_actors

    filters = [("state", "=", state)] if state else []
    deadline = time.monotonic() + timeout
    while True:
        found = [a for a in list_actors(address=dashboard, detail=True, limit=1000,
                                        filters=filters)
                 if a.class_name.rsplit(".", 1)[-1] == "ImplicitFunc"]
        if found:
            return found
        assert time.monotonic() < deadline, f"no Tune trial actor listed\n{cluster_view(dashboard)}"
        time.sleep(1)


def add_worker(cluster, env: dict[str, str], temp_dir: Path, num_cpus: int = 2):
    """Another worker node (its own temp dir, as its own pod); returns its Ray ``Node``."""
    return cluster.add_node(num_cpus=num_cpus, env_vars=env, temp_dir=str(temp_dir),
                            dashboard_agent_listen_port=free_port(),
                            metrics_export_port=free_port())


def node_processes(node) -> list[int]:
    """Pids of one node's live processes: its raylet and all its descendants (workers, agents; a
    worker's ``ray::`` title hides its command line), and whatever names the node's session
    dir. Nothing of other nodes: each node of :func:`two_node_cluster` has its own temp dir."""
    from ray._private import ray_constants

    raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    session = node.get_session_dir_path().encode()
    return sorted(procs.matching(lambda p: session in p.cmdline, roots=[raylet]))


def kill_node(node) -> list[int]:
    """SIGKILL every process of one node at once, as when its machine or pod dies; waits until
    they are gone (zombies aside: their parent reaps them). Returns the pids killed."""
    pids = node_processes(node)
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if p in procs.table()]
    assert not alive, f"node processes survived SIGKILL: {alive}"
    return pids


def fixed_serve_config(base: dict, port: int, log_dir: Path, model_uri: str,
                       replicas: int = 2, max_per_node: int | None = 1) -> dict:
    """serve/config.yaml (``base``) with ``replicas`` fixed replicas of ``model_uri`` (at most
    ``max_per_node`` per node), on a free port, with 0-CPU replicas (one may sit on the head)."""
    cfg = copy.deepcopy(base)
    cfg["http_options"] = {**cfg["http_options"], "host": "127.0.0.1", "port": port}
    dep = cfg["applications"][0]["deployments"][0]
    dep.pop("autoscaling_config")
    dep["num_replicas"] = replicas
    if max_per_node:
        dep["max_replicas_per_node"] = max_per_node
    dep["ray_actor_options"] = {**dep["ray_actor_options"], "num_cpus": 0}
    dep["user_config"] = {**dep["user_config"], "model_uri": model_uri, "poll_interval_s": 0}
    dep["user_config"]["prediction_log"] = {**dep["user_config"]["prediction_log"],
                                            "directory": str(log_dir)}
    assert dep["user_config"]["tracking_uri"] is None  # each replica reads its node's env
    return cfg
