"""End to end: a real Prometheus (`make observe`'s, raylane.observability.local) scraping a real
Ray Serve app through the service discovery file Ray writes, with the shipped alert rules. A
fault is injected (a version that cannot load is promoted), RaylaneModelLoadGaveUp goes firing
in /api/v1/alerts within its `for:` + 2 scrape intervals of the metric being exported, and
resolves after the fix (`champion` moved back). The measured latencies are printed."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import yaml
from support import serving as ss
from support.environ import restored_environ

from raylane.observability import local, manifests

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
INTERVAL_S = 2.0  # scrape and rule evaluation
ALERT = "RaylaneModelLoadGaveUp"
GAVE_UP = re.compile(r'^ray_raylane_model_load_gave_up\{[^}]*model_name="credit"[^}]*\} (\S+)$',
                     re.M)


def alert_for_s(name: str) -> float:
    rules = yaml.safe_load((ROOT / manifests.ALERTS).read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)
    value = str(rule.get("for", "0s"))
    return float(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]


def exported_gave_up(targets: list[str]) -> float | None:
    """The gauge as Ray's metrics agents export it right now (None: not exported)."""
    values = []
    for target in targets:
        try:
            text = httpx.get(f"http://{target}/metrics", timeout=5).text
        except httpx.HTTPError:
            continue
        values += [float(v) for v in GAVE_UP.findall(text)]
    return max(values) if values else None


def alert_state(prom: str, name: str) -> str | None:
    alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    states = [a["state"] for a in alerts if a["labels"].get("alertname") == name]
    return "firing" if "firing" in states else (states[0] if states else None)


def wait_for(what: str, fn, timeout: float, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"{what}: not within {timeout:.0f}s")


@pytest.fixture()
def stack(tmp_path):
    """MLflow (SQLite) with champion v1, a Ray cluster with its dashboard (which writes the
    discovery file), the Serve app, and Prometheus with the shipped rules."""
    import ray
    from ray import serve

    from raylane.serving.app import ModelServer

    uri = ss.tracking_uri_for(tmp_path)
    trained = ss.train("credit", n_estimators=10)
    v1 = str(ss.publish_trained(uri, "credit", trained).version.version)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rl-obs-", dir="/tmp"))  # short: unix socket paths
    prom_dir = tmp_path / "prometheus"
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


def test_a_model_that_cannot_load_fires_its_alert_and_resolves(stack):
    prom = stack["prom"]
    targets = [t for entry in yaml.safe_load(stack["sd"].read_text()) for t in entry["targets"]]
    # Prometheus scrapes Ray's targets and has the replica's gauge at 0 (the model is served)
    wait_for("Ray targets up in Prometheus", lambda: [
        t for t in httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        if t["health"] == "up"], 60)
    query = f"{prom}/api/v1/query"
    wait_for("the gauge in Prometheus", lambda: httpx.get(query, params={
        "query": "ray_raylane_model_load_gave_up"}, timeout=5).json()["data"]["result"], 90)
    assert alert_state(prom, ALERT) is None

    # the fault: a version that cannot load is promoted
    t_fault = time.monotonic()
    bad = ss.register_broken(stack["uri"], "credit", stack["trained"].schema,
                             stack["trained"].X, "corrupt_onnx")
    wait_for("the gauge exported at 1", lambda: exported_gave_up(targets) == 1.0, 120, 0.1)
    t_exported = time.monotonic()
    wait_for(f"{ALERT} firing", lambda: alert_state(prom, ALERT) == "firing", 120, 0.1)
    t_firing = time.monotonic()
    meta = httpx.get(f"{stack['serve']}/metadata", timeout=10).json()
    assert meta["version"] == stack["v1"] and meta["load_status"]["pending_version"] == bad

    # the fix: champion back on the served version
    ss.move_alias(stack["uri"], "credit", stack["v1"])
    t_fix = time.monotonic()
    wait_for("the gauge exported at 0", lambda: exported_gave_up(targets) == 0.0, 120, 0.1)
    t_exported_fix = time.monotonic()
    wait_for(f"{ALERT} resolved", lambda: alert_state(prom, ALERT) is None, 120, 0.1)
    t_resolved = time.monotonic()

    budget = alert_for_s(ALERT) + 2 * INTERVAL_S
    print(f"\n{ALERT}: fault -> exported {t_exported - t_fault:.1f} s, exported -> firing "
          f"{t_firing - t_exported:.1f} s (for + 2 scrape intervals = {budget:.0f} s); fix -> "
          f"exported {t_exported_fix - t_fix:.1f} s, exported -> resolved "
          f"{t_resolved - t_exported_fix:.1f} s")
    # the export itself is Ray's metrics agent (its report interval); Prometheus's part is
    # bounded by the rule's for: and two intervals (scrape, then evaluation), plus polling slack
    assert t_firing - t_exported <= budget + 1.0
    assert t_resolved - t_exported_fix <= budget + 1.0
