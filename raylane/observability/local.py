"""Prometheus for the Ray cluster `make serve` started (`make observe`).

    python -m raylane.observability.local [--port 9090] [--state-dir /tmp/raylane-serve-$UID]

Runs Debian's ``prometheus`` on 127.0.0.1 only, with a temporary TSDB (deleted when it stops),
scraping what Ray's service discovery file lists (every node's metrics agent: Ray's, Serve's and
the replicas' ``raylane_*`` metrics, the dashboard's), and evaluating the alert rules of
kuberay/observability/alerts.yaml. `make serve` gives the Ray head ``RAY_PROMETHEUS_HOST`` so the
dashboard's metrics views read this Prometheus. Grafana is not installed (no package in the
registries this project uses), so the dashboard's embedded Grafana charts stay off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

DEFAULT_RULES = Path("kuberay/observability/alerts.yaml")
DEFAULT_PORT = 9090
DISCOVERY_FILE = "prom_metrics_service_discovery.json"


def default_state_dir() -> Path:
    from raylane.deploy.local import DEFAULT_STATE

    return DEFAULT_STATE


def discovery_file(state_dir: Path) -> Path:
    """Ray's file_sd file for the cluster whose temp dir is ``state_dir`` (current session)."""
    return state_dir / "session_latest" / DISCOVERY_FILE


def prometheus_config(discovery: Path, rules: Path | None, interval_s: float,
                      extra_targets: list[str] = ()) -> dict[str, Any]:
    """The prometheus.yml: Ray's targets by file discovery, the rules, one interval for both."""
    interval = f"{interval_s:g}s"
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "scrape_timeout": f"{min(interval_s, 10):g}s"},
        "scrape_configs": [{"job_name": "ray",
                            "file_sd_configs": [{"files": [str(discovery)],
                                                 "refresh_interval": "5s"}]}],
    }
    if extra_targets:
        config["scrape_configs"].append({"job_name": "raylane-exporters",
                                         "static_configs": [{"targets": list(extra_targets)}]})
    if rules is not None:
        config["rule_files"] = [str(rules.resolve())]
    return config


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if not found:
        raise FileNotFoundError("prometheus not found: `make observe` installs Debian's package "
                                "(apt-get install prometheus)")
    return found


def start(workdir: Path, config: dict[str, Any], port: int) -> subprocess.Popen:
    """Start Prometheus on 127.0.0.1:``port`` with its config and TSDB in ``workdir``."""
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (workdir / "data").mkdir(exist_ok=True)
    log = open(workdir / "prometheus.log", "w")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen(
        [prometheus_binary(), f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
         "--storage.tsdb.retention.time=1d", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prometheus not ready on 127.0.0.1:{port} after {timeout:.0f}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylane.observability.local",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="the Ray temp dir of `make serve` (default: its own)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES)
    parser.add_argument("--interval-s", type=float, default=5.0,
                        help="scrape and rule evaluation interval")
    parser.add_argument("--exporter", action="append", default=[],
                        help="host:port of another /metrics to scrape (e.g. the monitoring "
                             "exporter); repeatable")
    args = parser.parse_args(argv)
    discovery = discovery_file(args.state_dir or default_state_dir())
    if not discovery.exists():
        print(f"warning: {discovery} does not exist yet (start the cluster: make serve); "
              "Prometheus picks it up when it appears", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="raylane-prometheus-"))
    proc = None
    try:
        proc = start(workdir, prometheus_config(discovery, args.rules, args.interval_s,
                                                args.exporter), args.port)
        wait_ready(args.port, proc)
        print(f"Prometheus on http://127.0.0.1:{args.port} (alerts: /alerts), scraping "
              f"{discovery}; TSDB in {workdir} (deleted on exit). Ctrl-C stops it.", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        with contextlib.suppress(KeyboardInterrupt):
            proc.wait()
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}; log: {workdir / 'prometheus.log'}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop(proc)
        if os.environ.get("RAYLANE_KEEP_PROMETHEUS_DIR") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
