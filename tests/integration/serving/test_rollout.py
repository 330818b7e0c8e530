"""Rollout on real Ray Serve: hot swap under load, broken versions refused, autoscaling."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter

import httpx
import pytest
from support import serving as ss

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_rollout")
    uri = ss.tracking_uri_for(tmp)
    first = ss.train("credit", n_estimators=20, seed=0)
    schema, X = first.schema, first.X
    v1 = str(ss.publish_trained(uri, "credit", first).version.version)
    # a second version, challenger only: the test moves the champion alias to it by hand
    second = ss.publish_trained(uri, "credit", ss.train("credit", n_estimators=40, seed=1),
                                promote=False)
    v2, onnx2 = str(second.version.version), second.onnx_bytes
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in X.head(2).to_dict(orient="records")
    ]
    with ss.ray_serve() as base:
        yield {"base": base, "uri": uri, "schema": schema, "X": X, "v1": v1, "v2": v2,
               "body": json.dumps({"records": rows}).encode(), "onnx2": onnx2}


class Traffic:
    """Client threads posting /predict continuously; counts statuses and versions seen."""

    def __init__(self, url: str, body: bytes, threads: int = 2):
        self.url, self.body = url, body
        self.statuses: Counter = Counter()
        self.versions: Counter = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, content=self.body,
                                    headers={"content-type": "application/json"})
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        self.versions[r.json()["model_version"]] += 1
                    else:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    self.statuses["exception"] += 1
                    self.errors.append(repr(exc))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)


def _wait_version(client: httpx.Client, path: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(path).json().get("model_version") == version:
            return
        time.sleep(0.25)
    raise AssertionError(f"{path} never reported version {version}")


def test_hot_swap_under_load_then_broken_versions_are_refused(env):
    base, uri = env["base"], env["uri"]
    cfg = ss.settings(uri, "models:/credit@champion", poll_interval_s=1.0)
    ss.deploy("swap", cfg, route_prefix="/swap", num_replicas=2)
    client = httpx.Client(base_url=base, timeout=30)
    url = f"{base}/swap/predict"
    with Traffic(url, env["body"]) as traffic:
        time.sleep(2)
        ss.move_alias(uri, "credit", env["v2"])  # the registry poll picks it up
        deadline = time.monotonic() + 60
        while traffic.versions[env["v2"]] < 20 and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(1)
    assert traffic.errors == [], traffic.errors[:5]
    assert traffic.versions[env["v1"]] > 0 and traffic.versions[env["v2"]] > 0, traffic.versions
    _wait_version(client, "/swap/healthz", env["v2"])

    # broken new versions: corrupt graph, then a version without raylane's schema metadata
    for how in ("corrupt_onnx", "no_schema"):
        with Traffic(url, env["body"], threads=1) as traffic:
            bad = ss.register_broken(uri, "credit", env["schema"], env["X"], how)
            deadline = time.monotonic() + 60
            meta = {}
            while time.monotonic() < deadline:
                meta = client.get("/swap/metadata").json()
                if (meta.get("last_error") or {}).get("version") == bad:
                    break
                time.sleep(0.5)
            time.sleep(1.5)  # a few more polls: the bad version must not be retried into service
        assert meta["version"] == env["v2"], meta
        assert meta["last_error"]["version"] == bad and meta["last_error"]["kept_version"] == \
            env["v2"], meta
        status = meta["load_status"]
        assert status["state"] == "gave_up" and status["pending_version"] == bad, status
        assert status["last_load_error"].startswith("permanent: ") and status["attempts"] == 1
        assert traffic.errors == [] and set(traffic.versions) == {env["v2"]}, traffic.versions
    assert client.get("/swap/healthz").json()["model_version"] == env["v2"]

    # a user_config change (reconfigure in place) pins a version, under load, without errors
    with Traffic(url, env["body"]) as traffic:
        time.sleep(1)
        ss.deploy("swap", {**cfg, "model_uri": f"models:/credit/{env['v1']}"},
                  route_prefix="/swap", num_replicas=2)
        _wait_version(client, "/swap/healthz", env["v1"])
        time.sleep(1)
    assert traffic.errors == [], traffic.errors[:5]
    assert traffic.versions[env["v1"]] > 0
    from ray import serve

    serve.delete("swap")


def test_autoscaling_up_under_load_and_back_down(env):
    base, uri = env["base"], env["uri"]
    ss.move_alias(uri, "credit", env["v1"])
    ss.deploy(
        "auto",
        ss.settings(uri, "models:/credit@champion", batching={"enabled": False}),
        route_prefix="/auto",
        num_replicas="auto",
        max_ongoing_requests=4,
        autoscaling_config={
            "min_replicas": 1, "max_replicas": 2, "initial_replicas": 1,
            "target_ongoing_requests": 1, "upscale_delay_s": 1, "downscale_delay_s": 4,
            "metrics_interval_s": 0.5, "look_back_period_s": 2,
        },
    )
    assert ss.replica_count("auto") == 1
    seen_up = False
    with Traffic(f"{base}/auto/predict", env["body"], threads=6) as traffic:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if ss.replica_count("auto") == 2:
                seen_up = True
                break
            time.sleep(0.5)
    assert seen_up, "never scaled up to 2 replicas under load"
    assert traffic.errors == [], traffic.errors[:5]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and ss.replica_count("auto") != 1:
        time.sleep(0.5)
    assert ss.replica_count("auto") == 1, "did not scale back down to 1 replica"
