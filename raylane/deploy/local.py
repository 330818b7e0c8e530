"""Serve the registered champion on this machine the way the RayService serves it.

    python -m raylane.deploy.local start    # `make serve`: Ray head + serve/config.yaml, RUNNING
    python -m raylane.deploy.local stop     # `make serve-stop`: that Ray cluster and its HAProxy
    python -m raylane.deploy.local start --ha       # `make serve HA=1`: GCS fault tolerance
    python -m raylane.deploy.local restart-head     # a new head after the old one died (--ha)

``start`` runs ``ray start --head`` with the cluster environment the RayService's Ray containers
carry (:data:`SERVING_ENV`: HAProxy ingress, throughput-optimised Serve, replicas at normal
priority), ``RAY_PROMETHEUS_HOST`` (the Prometheus of ``make observe``) and
``MLFLOW_TRACKING_URI`` (default: ``sqlite:///$PWD/mlflow.db``, where ``make demo`` registers),
deploys the Serve config, and waits until the application is RUNNING.

Everything lives in one short state directory (Ray's temp dir, HAProxy's files and sockets), so
``stop`` ends exactly the processes whose command line names it: never another Ray cluster on
the machine (``ray stop`` would end them all), and HAProxy too (it can outlive ``ray stop``).

``--ha`` runs the RayService's head-failure layout: a Redis on 127.0.0.1 (password from a 0600
file, :mod:`raylane.deploy.redis_local`) keeping the GCS's tables, a head with no CPUs (GCS,
dashboard, Serve's controller) and one worker node holding the replicas and the proxy clients
use (``--worker-port``). When the head dies, the worker keeps its replicas; ``restart-head``
starts a new head on the same Redis, namespace and GCS port, which takes the cluster over.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import requests
import yaml

from raylane.deploy import processes, redis_local
from raylane.deploy.cluster_env import load as load_cluster_env
from raylane.deploy.ray_start import PASSWORD_FILE_ENV
from raylane.ray_auth import auth_headers, ensure_token

# The RayService's RAY_* environment (serve/cluster_env.yaml; see raylane.deploy.cluster_env).
SERVING_ENV = load_cluster_env()
DEFAULT_STATE = Path(f"/tmp/raylane-serve-{os.getuid()}")  # short: unix sockets cap at ~100 chars
DEFAULT_CONFIG = Path("serve/config.yaml")
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
PROMETHEUS_HOST = "http://127.0.0.1:9090"  # `make observe`
WORKER_PORT = 8001  # --ha: the worker node's proxy (the head's keeps the Serve config's port)
NAMESPACE = "raylane"  # --ha: the GCS's key prefix in Redis (RAY_external_storage_namespace)
# --ha: how long the worker's raylet and workers wait for a GCS before exiting (Ray's default 60 s)
RECONNECT_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_env(state_dir: Path) -> dict[str, str]:
    """:data:`SERVING_ENV` plus what depends on this machine: HAProxy's files in ``state_dir``,
    its stats/metrics ports, its threads (at most half the CPUs, as on a pod) and proxy start-up
    timeouts a busy small machine needs."""
    return {
        **SERVING_ENV,
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(state_dir / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(state_dir / "admin.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state_dir),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(state_dir / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(state_dir / "metrics.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_NBTHREAD": str(max(1, (os.cpu_count() or 2) // 2)),
        "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
        "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "30",
        # the dashboard's metrics views read the Prometheus `make observe` runs (Grafana is not
        # installed locally: RAY_GRAFANA_HOST stays unset and the dashboard says so)
        "RAY_PROMETHEUS_HOST": os.environ.get("RAY_PROMETHEUS_HOST", PROMETHEUS_HOST),
    }


def _bin(name: str) -> str:
    """A console script of this environment (``ray``, ``serve``), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def processes_of(state_dir: Path) -> list[int]:
    """Pids of live processes started for ``state_dir``: those naming it in their command line
    or environment (Ray's daemons, HAProxy), and their descendants (Ray workers)."""
    needle = str(state_dir).encode()
    return sorted(processes.matching(lambda p: needle in p.cmdline or needle in p.environ))


def _champion(model_uri: str, tracking_uri: str) -> str | None:
    """Why the Serve config's model cannot be served (None if its alias or version exists)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, _, ref = model_uri.removeprefix("models:/").partition("@")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if ref:
            client.get_model_version_by_alias(name, ref)
        else:
            name, _, version = model_uri.removeprefix("models:/").partition("/")
            client.get_model_version(name, version)
    except MlflowException as exc:
        return f"{model_uri} not found in {tracking_uri} ({str(exc).splitlines()[0]})"
    return None


def _status(dashboard: str, env: dict[str, str]) -> dict:
    """Serve's state as ``serve status`` prints it (``applications`` -> ``status``, ``message``,
    ``deployments`` -> ``status``, ``replica_states``), read from the dashboard's REST API with
    the cluster's token; ``{}`` while the dashboard does not answer. One HTTP call instead of a
    ``serve status`` process (a Python start and Ray's imports, 2.5-4 s of CPU on 2 cores while
    the replicas it waits for are starting)."""
    try:
        response = requests.get(f"{dashboard}/api/serve/applications/",
                                headers=auth_headers(env), timeout=30)
    except requests.RequestException:
        return {}
    if response.status_code != 200:
        return {}
    details = response.json() or {}
    return {"applications": {
        name: {"status": app.get("status"), "message": app.get("message", ""),
               "deployments": {
                   dep_name: {"status": dep.get("status"), "message": dep.get("message", ""),
                              "replica_states": dict(Counter(
                                  r.get("state") for r in dep.get("replicas") or []))}
                   for dep_name, dep in (app.get("deployments") or {}).items()}}
        for name, app in (details.get("applications") or {}).items()}}


def wait_running(dashboard: str, apps: list[str], env: dict[str, str], timeout: float) -> None:
    """Poll ``serve status`` until every application is RUNNING (raise on DEPLOY_FAILED)."""
    deadline = time.monotonic() + timeout
    last: dict = {}
    while time.monotonic() < deadline:
        last = _status(dashboard, env).get("applications") or {}
        states = {app: (last.get(app) or {}).get("status") for app in apps}
        failed = [app for app, s in states.items() if s in {"DEPLOY_FAILED", "UNHEALTHY"}]
        if failed:
            raise RuntimeError(f"{failed}: {yaml.safe_dump({a: last[a] for a in failed})}")
        if all(s == "RUNNING" for s in states.values()):
            return
        time.sleep(0.5)
    raise TimeoutError(f"not RUNNING after {timeout:.0f}s: {yaml.safe_dump(last)[:3000]}")


class HA(dict):
    """The ``--ha`` layout's settings, saved as ``ha.json`` in the state directory so that
    ``restart-head`` starts the head exactly as before: ``redis`` (False: the same layout with
    the GCS in memory, what a head loss costs without Redis), ``redis_port``,
    ``password_file``, ``dashboard_port``, ``worker_port``, ``worker_cpus``,
    ``reconnect_timeout_s``, and, once started, ``gcs_port``, ``tracking_uri`` and ``heads``
    (head incarnations so far)."""

    @classmethod
    def defaults(cls, **over) -> HA:
        return cls({"redis": True, "redis_port": None, "password_file": None,
                    "dashboard_port": DASHBOARD_PORT, "worker_port": WORKER_PORT, "worker_cpus": 2,
                    "reconnect_timeout_s": RECONNECT_TIMEOUT_S, **over})


def _ray_start(args: list[str], env: dict[str, str], password_file: str | None) -> None:
    if password_file:  # the password from its file, through raylane.deploy.ray_start
        cmd = [sys.executable, "-m", "raylane.deploy.ray_start", *args]
        env = {**env, PASSWORD_FILE_ENV: password_file}
    else:
        cmd = [_bin("ray"), "start", *args]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def head_dir(state_dir: Path, ha: HA) -> Path:
    """The current head's temp dir: one per incarnation, as each head pod has its own disk."""
    return state_dir / f"head-{ha['heads']}"


def head_processes(state_dir: Path) -> list[int]:
    """Pids of the current head's processes (GCS, raylet, dashboard, its workers, its proxy):
    those naming its temp dir, and their descendants; what a head pod's death takes. Nothing of
    the worker node's process tree (its raylet and everything below it) or Redis.

    The tree decides, not the name: Serve's HAProxy manager on the worker node runs with the
    head's ``RAY_SERVE_HAPROXY_*`` paths, so the worker's HAProxy names the head's directory
    on its command line (``-f head-1/<node id>/haproxy.cfg``) though it lives on the worker."""
    ha = HA(json.loads((state_dir / "ha.json").read_text()))
    head, worker = str(head_dir(state_dir, ha)).encode(), str(state_dir / "worker").encode()
    table = processes.table()
    named = {pid for pid, p in table.items() if head in p.cmdline or head in p.environ}
    on_worker = processes.with_descendants(
        {pid for pid, p in table.items() if worker in p.cmdline}, table)
    return sorted(processes.with_descendants(named, table) - on_worker)


def start_head(state_dir: Path, ha: HA) -> None:
    """A new head incarnation (GCS on ``ha['gcs_port']``, no CPUs); with Redis, on the same
    Redis and namespace, so it reloads the cluster's state. Saves ``ha.json``."""
    ha["heads"] = ha.get("heads", 0) + 1
    directory = head_dir(state_dir, ha)
    directory.mkdir(parents=True)
    env = {**os.environ, **cluster_env(directory), "MLFLOW_TRACKING_URI": ha["tracking_uri"],
           "RAY_AUTH_MODE": "token",
           "RAY_gcs_rpc_server_reconnect_timeout_s": str(ha["reconnect_timeout_s"])}
    if ha["redis"]:
        env.update(RAY_REDIS_ADDRESS=f"127.0.0.1:{ha['redis_port']}",
                   RAY_external_storage_namespace=NAMESPACE)
    (state_dir / "ha.json").write_text(json.dumps(ha, indent=1))
    _ray_start(
        ["--head", "--num-cpus=0", f"--temp-dir={directory}", f"--port={ha['gcs_port']}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={ha['dashboard_port']}",
         f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
        env, ha["password_file"] if ha["redis"] else None)


def start_worker(state_dir: Path, ha: HA) -> None:
    """The worker node: the replicas and the proxy on ``ha['worker_port']``, its own files."""
    directory = state_dir / "worker"
    directory.mkdir(parents=True)
    env = {**os.environ, **cluster_env(directory), "MLFLOW_TRACKING_URI": ha["tracking_uri"],
           "RAY_AUTH_MODE": "token",
           "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(ha["worker_port"]),
           "RAY_gcs_rpc_server_reconnect_timeout_s": str(ha["reconnect_timeout_s"])}
    _ray_start([f"--address=127.0.0.1:{ha['gcs_port']}", f"--num-cpus={ha['worker_cpus']}",
                f"--temp-dir={directory}", f"--metrics-export-port={free_port()}",
                f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"],
               env, None)


def start_ha_cluster(state_dir: Path, tracking_uri: str, ha: HA) -> None:
    """Redis (unless ``ha['redis']`` is False), the head, the worker node."""
    ha.update(tracking_uri=tracking_uri, gcs_port=free_port())
    if ha["redis"]:
        ha["redis_port"] = ha["redis_port"] or free_port()
        ha["password_file"] = str(Path(ha["password_file"] or state_dir / "redis" / "password")
                                  .resolve())
        redis = redis_local.start(state_dir / "redis", ha["redis_port"],
                                  Path(ha["password_file"]))
        print(f"Redis on {redis.address} (password in {ha['password_file']})", flush=True)
    start_head(state_dir, ha)
    start_worker(state_dir, ha)


def restart_head(state_dir: Path, timeout: float = 120) -> int:
    """A new head for the ``--ha`` cluster under ``state_dir`` after the old one died."""
    ha = HA(json.loads((state_dir / "ha.json").read_text()))
    if head_processes(state_dir):
        print("the head is still running", file=sys.stderr)
        return 1
    start_head(state_dir, ha)
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    deadline = time.monotonic() + timeout
    while not _status(f"http://127.0.0.1:{ha['dashboard_port']}", env):
        if time.monotonic() > deadline:
            print(f"Serve's REST API did not answer after {timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.5)
    print(f"head {ha['heads']} started on the GCS port {ha['gcs_port']}")
    return 0


def start(config: Path, tracking_uri: str, state_dir: Path, timeout: float,
          ha: HA | None = None) -> int:
    if processes_of(state_dir):
        print(f"already running (processes under {state_dir}); stop it first: make serve-stop",
              file=sys.stderr)
        return 1
    serve_config = yaml.safe_load(config.read_text())
    apps = serve_config["applications"]
    for app in apps:
        for dep in app.get("deployments", []):
            uri = (dep.get("user_config") or {}).get("model_uri")
            problem = uri and _champion(uri, tracking_uri)
            if problem:
                print(f"error: {problem}; run `make demo` first", file=sys.stderr)
                return 1
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(parents=True)
    env = {**os.environ, **cluster_env(state_dir), "MLFLOW_TRACKING_URI": tracking_uri,
           "RAY_AUTH_MODE": "token"}
    dashboard = f"http://127.0.0.1:{ha['dashboard_port'] if ha else DASHBOARD_PORT}"
    print(f"starting Ray (state and logs in {state_dir}) ...", flush=True)
    try:
        ensure_token(_bin("ray"), env)
        if ha is None:
            subprocess.run(
                [_bin("ray"), "start", "--head", f"--temp-dir={state_dir}",
                 f"--port={free_port()}", "--dashboard-host=127.0.0.1",
                 f"--dashboard-port={DASHBOARD_PORT}", f"--ray-client-server-port={free_port()}",
                 "--disable-usage-stats"],
                env=env, check=True, stdout=subprocess.DEVNULL,
            )
        else:
            start_ha_cluster(state_dir, tracking_uri, ha)
        subprocess.run([_bin("serve"), "deploy", str(config), "-a", dashboard], env=env,
                       check=True, timeout=300)
        wait_running(dashboard, [a["name"] for a in apps], env, timeout)
    except (subprocess.SubprocessError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: {exc}\nlogs: {state_dir}/session_latest/logs", file=sys.stderr)
        stop(state_dir)
        return 1
    port = (serve_config.get("http_options") or {}).get("port", SERVE_PORT)
    if ha is not None:
        print(f"GCS fault tolerance: the head ({state_dir}/head-1) has no CPUs; the replicas "
              f"and the proxy on {ha['worker_port']} are on the worker node. After a head "
              "loss: python -m raylane.deploy.local restart-head (docs/operations.md)")
        port = ha["worker_port"]
    print(f"""
Serving {', '.join(a['name'] for a in apps)} (HAProxy ingress) on http://localhost:{port}
dashboard {dashboard}; MLFLOW_TRACKING_URI={tracking_uri}

curl -s localhost:{port}/predict -H 'Content-Type: application/json' \\
  -d '{{"records": [{{"Seniority": 9, "Home": "rent", "Time": 60, "Age": 30, "Marital": "married",
       "Records": "no", "Job": "freelance", "Expenses": 73, "Income": 129, "Assets": 0,
       "Debt": 0, "Amount": 800, "Price": 846}}]}}'

Status: RAY_AUTH_MODE=token serve status -a {dashboard}
Stop it with: make serve-stop""")
    return 0


def stop(state_dir: Path, grace: float = 20.0) -> int:
    """SIGTERM, then SIGKILL, every process under ``state_dir``; then remove the directory."""
    pids = processes.terminate(lambda: processes_of(state_dir), grace)
    if pids:
        print(f"still running: {pids}", file=sys.stderr)
        return 1
    shutil.rmtree(state_dir, ignore_errors=True)
    print(f"stopped (nothing left under {state_dir})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylane.deploy.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "restart-head"])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--tracking-uri", default=os.environ.get(
        "MLFLOW_TRACKING_URI", f"sqlite:///{Path('mlflow.db').resolve()}"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the applications to be RUNNING")
    ha = parser.add_argument_group("GCS fault tolerance (--ha)")
    ha.add_argument("--ha", action="store_true",
                    help="Redis-backed GCS, a head with no CPUs, replicas on a worker node")
    ha.add_argument("--redis-port", type=int, default=None, help="default: a free port")
    ha.add_argument("--redis-password-file", type=Path, default=None,
                    help="mode 0600; default: a new random password in the state directory")
    ha.add_argument("--worker-port", type=int, default=WORKER_PORT,
                    help="the worker node's Serve proxy (HTTP)")
    ha.add_argument("--worker-cpus", type=int, default=2)
    args = parser.parse_args(argv)
    if args.command == "stop":
        return stop(args.state_dir)
    if args.command == "restart-head":
        return restart_head(args.state_dir)
    settings = HA.defaults(redis_port=args.redis_port, worker_port=args.worker_port,
                           worker_cpus=args.worker_cpus,
                           password_file=args.redis_password_file and
                           str(args.redis_password_file.resolve())) if args.ha else None
    return start(args.config, args.tracking_uri, args.state_dir, args.timeout, settings)


if __name__ == "__main__":
    sys.exit(main())
