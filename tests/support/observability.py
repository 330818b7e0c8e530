"""A real Prometheus (`make observe`'s, raylane.observability.local) scraping a real Ray Serve app
through the service discovery file Ray writes, with the shipped alert rules: shared by the
alert end-to-end test and the console's Metrics view test (one stack per test module)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raylane.observability import local, manifests
from support import serving as ss
from support.environ import restored_environ

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 2.0  # scrape and rule evaluation


def wait_for(what: str, fn, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


@contextmanager
def served_and_scraped(tmp: Path) -> Iterator[dict]:
    """MLflow (SQLite) with champion v1, a Ray cluster with its dashboard (which writes the
    discovery file), the Serve app, and Prometheus with the shipped rules; all stopped on exit."""
    import ray
    from ray import serve

    from raylane.serving.app import ModelServer

    uri = ss.tracking_uri_for(tmp)
    trained = ss.train("credit", n_estimators=10)
    v1 = str(ss.publish_trained(uri, "credit", trained).version.version)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl-obs-", dir="/tmp"))  # short: unix socket paths
    prom_dir = tmp / "prometheus"
    prom_dir.mkdir()
    proc = None
    with restored_environ():
        for var in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_ADDRESS"):
            os.environ.pop(var, None)
        os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
        os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
        port = ss.free_port()
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=ss.free_port(), _metrics_export_port=ss.free_port(),
                 address="local", _temp_dir=str(ray_tmp),
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(ModelServer.options(
                user_config=ss.settings(uri, "models:/credit@champion", poll_interval_s=1.0),
                num_replicas=1, ray_actor_options={"num_cpus": 0.5}).bind(),
                name="raylane", route_prefix="/", blocking=False)
            ss.wait_running("raylane")
            sd = local.discovery_file(ray_tmp)
            wait_for("Ray's service discovery file", sd.exists, 60)
            prom_port = ss.free_port()
            proc = local.start(prom_dir, local.prometheus_config(
                sd, ROOT / manifests.ALERTS, INTERVAL_S), prom_port)
            local.wait_ready(prom_port, proc)
            yield {"uri": uri, "v1": v1, "trained": trained, "sd": sd,
                   "prom": f"http://127.0.0.1:{prom_port}", "serve": f"http://127.0.0.1:{port}"}
        finally:
            if proc is not None:
                local.stop(proc)
            try:
                serve.shutdown()
            finally:
                serve.context._set_global_client(None)
                ray.shutdown()
                shutil.rmtree(ray_tmp, ignore_errors=True)
