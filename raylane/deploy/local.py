"""Serve the registered champion on this machine the way the RayService serves it.

    python -m raylane.deploy.local start    # `make serve`: Ray head + serve/config.yaml, RUNNING
    python -m raylane.deploy.local stop     # `make serve-stop`: that Ray cluster and its HAProxy

``start`` runs ``ray start --head`` with the cluster environment the RayService's Ray containers
carry (:data:`SERVING_ENV`: HAProxy ingress, throughput-optimised Serve, replicas at normal
priority), ``RAY_PROMETHEUS_HOST`` (the Prometheus of ``make observe``) and
``MLFLOW_TRACKING_URI`` (default: ``sqlite:///$PWD/mlflow.db``, where ``make demo`` registers),
deploys the Serve config, and waits until the application is RUNNING.

Everything lives in one short state directory (Ray's temp dir, HAProxy's files and sockets), so
``stop`` ends exactly the processes whose command line names it: never another Ray cluster on
the machine (``ray stop`` would end them all), and HAProxy too (it can outlive ``ray stop``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from raylane.deploy import processes
from raylane.deploy.cluster_env import load as load_cluster_env

# The RayService's RAY_* environment (serve/cluster_env.yaml; see raylane.deploy.cluster_env).
SERVING_ENV = load_cluster_env()
DEFAULT_STATE = Path(f"/tmp/raylane-serve-{os.getuid()}")  # short: unix sockets cap at ~100 chars
DEFAULT_CONFIG = Path("serve/config.yaml")
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
PROMETHEUS_HOST = "http://127.0.0.1:9090"  # `make observe`


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
    out = subprocess.run([_bin("serve"), "status", "-a", dashboard], env=env, text=True,
                         capture_output=True, timeout=60, check=False)
    if out.returncode != 0:
        return {}
    return yaml.safe_load(out.stdout) or {}


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
        time.sleep(2)
    raise TimeoutError(f"not RUNNING after {timeout:.0f}s: {yaml.safe_dump(last)[:3000]}")


def start(config: Path, tracking_uri: str, state_dir: Path, timeout: float) -> int:
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
    dashboard = f"http://127.0.0.1:{DASHBOARD_PORT}"
    print(f"starting Ray (state and logs in {state_dir}) ...", flush=True)
    subprocess.run(
        [_bin("ray"), "start", "--head", f"--temp-dir={state_dir}", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={DASHBOARD_PORT}",
         f"--ray-client-server-port={free_port()}", "--disable-usage-stats"],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )
    try:
        subprocess.run([_bin("serve"), "deploy", str(config), "-a", dashboard], env=env,
                       check=True, timeout=300)
        wait_running(dashboard, [a["name"] for a in apps], env, timeout)
    except (subprocess.SubprocessError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}\nlogs: {state_dir}/session_latest/logs", file=sys.stderr)
        stop(state_dir)
        return 1
    port = (serve_config.get("http_options") or {}).get("port", SERVE_PORT)
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
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--tracking-uri", default=os.environ.get(
        "MLFLOW_TRACKING_URI", f"sqlite:///{Path('mlflow.db').resolve()}"))
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the applications to be RUNNING")
    args = parser.parse_args(argv)
    if args.command == "stop":
        return stop(args.state_dir)
    return start(args.config, args.tracking_uri, args.state_dir, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
