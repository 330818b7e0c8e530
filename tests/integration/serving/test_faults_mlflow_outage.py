"""Fault: the MLflow server (the model registry) stops while a replica serves.

Budget: zero failed requests during the outage; ``/metadata`` (``load_status.registry``) and
the ``raylane_registry_reachable`` gauge say the registry is unreachable while it is down;
when it returns, polling resumes and a champion moved during the outage is picked up.

A real ``mlflow server`` process (stopped and started again on the same port and store), real
models, the real replica (:class:`~raylane.serving.replica.Replica`, polling every 0.2 s) and
app, called in-process through ASGI on the replica's event loop while it polls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter

import httpx
import pytest
import yaml
from support import serving as ss
from support.mlflow_server import mlflow_server

from raylane.serving.api import bind, build_api
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.replica import Replica
from raylane.tracking.registry import set_alias
from raylane.tracking.runs import mlflow_client

pytestmark = pytest.mark.slow
URI = "models:/credit@champion"
# the replicas' MLflow client settings, as serve/config.yaml gives them (runtime_env)
(_APP,) = yaml.safe_load((ss.ROOT / "serve" / "config.yaml").read_text())["applications"]
REPLICA_ENV = _APP["runtime_env"]["env_vars"]
NOTICE_S = 25  # a poll while the registry is down returns (fails) within this


@pytest.fixture()
def server(tmp_path, monkeypatch):
    # a registry call fails in seconds while the server is down (MLflow's client would retry
    # for minutes by default; the replica's own polling is the retry): the serving env does it
    for key, value in REPLICA_ENV.items():
        monkeypatch.setenv(key, value)
    with mlflow_server(tmp_path) as srv:
        yield srv


class Traffic:
    """One-row predictions back to back on the replica's loop; statuses and versions seen."""

    def __init__(self, api, body: dict) -> None:
        self.api, self.body = api, body
        self.statuses: Counter = Counter()
        self.versions: Counter = Counter()
        self._stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def _run(self) -> None:
        transport = httpx.ASGITransport(app=self.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as http:
            while not self._stop.is_set():
                r = await http.post("/predict", json=self.body)
                self.statuses[r.status_code] += 1
                if r.status_code == 200:
                    self.versions[r.json()["model_version"]] += 1
                await asyncio.sleep(0.005)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        await self.task


async def until(condition, what: str, timeout: float = 60) -> float:
    start = time.monotonic()
    while not await condition():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return time.monotonic() - start


def test_predictions_go_on_while_the_registry_is_down_and_polling_resumes(server):
    trained = ss.train("credit", n_estimators=10)
    v1 = ss.register_raw(server.url, "credit", trained.onnx_bytes, trained.schema, trained.X)
    v2 = ss.register_raw(server.url, "credit", trained.onnx_bytes, trained.schema, trained.X,
                         alias=None)
    row = {k: (None if v != v else v) for k, v in trained.X.head(1).to_dict("records")[0].items()}
    store = f"sqlite:///{server.home / 'mlflow.db'}"  # the server's own store, to edit offline

    async def main():
        replica = Replica()
        replica.housekeeping_period_s = 0.05
        gauge: list[float] = []
        replica.telemetry.registry_reachable.set = lambda value, tags=None: gauge.append(value)
        await replica.reconfigure({"model_uri": URI, "tracking_uri": server.url,
                                   "poll_interval_s": 0.2})
        api = build_api(PROTOCOLS)
        bind(api, replica.plane, PROTOCOLS)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://r")

        async def registry() -> dict:
            return (await http.get("/metadata")).json()["load_status"]["registry"]

        async def reachable() -> bool:
            return (await registry())["reachable"] is True

        async def unreachable() -> bool:
            return (await registry())["reachable"] is False

        def gauge_is(value: int):
            async def check() -> bool:
                return bool(gauge) and gauge[-1] == value
            return check

        async def serving_v2() -> bool:
            return (await http.get("/healthz")).json()["model_version"] == v2

        out: dict = {}
        traffic = Traffic(api, {"records": [row]})
        traffic.start()
        await until(reachable, "a first poll")
        await asyncio.to_thread(server.stop)
        out["noticed_s"] = await until(unreachable, "the registry reported unreachable")
        out["down"] = await registry()
        out["down_health"] = (await http.get("/healthz")).json()
        await until(gauge_is(0), "the gauge reported unreachable", timeout=10)
        # meanwhile someone moves the champion (in the store the server will read again)
        set_alias(mlflow_client(store), "credit", "champion", v2)
        await asyncio.sleep(2)  # more polls fail; predictions carry on
        out["during"] = sum(traffic.statuses.values())
        await asyncio.to_thread(server.start)
        out["swapped_s"] = await until(serving_v2, "the champion moved during the outage")
        out["up"] = await registry()
        await until(gauge_is(1), "the gauge reported reachable", timeout=10)
        await asyncio.sleep(0.5)
        await traffic.stop()
        await http.aclose()
        await replica.stop()
        return out, traffic

    out, traffic = asyncio.run(main())
    assert set(traffic.statuses) == {200}, traffic.statuses  # zero failed requests
    assert out["during"] > 100 and set(traffic.versions) == {v1, v2}
    down = out["down"]
    assert down["reachable"] is False and down["last_error"] == "transient: ConnectionError"
    assert down["since"] is not None
    assert out["noticed_s"] < NOTICE_S, out  # the poll in flight gave up in seconds
    assert out["down_health"]["status"] == "ok" and out["down_health"]["model_version"] == v1
    assert out["up"]["reachable"] is True and out["up"]["last_error"] is None
    print(f"outage noticed in {out['noticed_s']:.1f}s; new champion {out['swapped_s']:.1f}s "
          f"after the restart began; {sum(traffic.statuses.values())} requests, all 200")


def test_a_replica_started_while_the_registry_is_down_serves_once_it_returns(server):
    """Real Ray Serve: the deployment neither serves nor fails while MLflow is down (its replica
    keeps retrying its first load, starting), and runs and answers once MLflow is back."""
    from ray import serve

    from raylane.serving.app import ModelServer

    trained = ss.train("credit", n_estimators=10)
    v1 = ss.register_raw(server.url, "credit", trained.onnx_bytes, trained.schema, trained.X)
    server.stop()
    fail_fast = dict(REPLICA_ENV)
    with ss.ray_serve() as base:
        app = ModelServer.options(
            user_config=ss.settings(server.url, URI), num_replicas=1,
            ray_actor_options={"num_cpus": 0.5, "runtime_env": {"env_vars": fail_fast}},
        ).bind()
        # serve.run returns once the application runs: here, only after MLflow is back
        deploying = threading.Thread(target=serve.run, daemon=True, kwargs={
            "target": app, "name": "faults", "route_prefix": "/"})
        deploying.start()
        # 25 s of a registry that refuses connections: the replica waits, starting (a start
        # that raised would count as failed: after three, Serve gives the deployment up)
        deadline, seen = time.monotonic() + 25, set()
        while time.monotonic() < deadline:
            state = serve.status().applications.get("faults")
            status = state.status if state else "NONE"
            seen.add(getattr(status, "value", status))
            assert status in ("NOT_STARTED", "DEPLOYING", "NONE"), (status, state)
            assert ss.replica_count("faults") == 0
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"{base}/healthz", timeout=5).raise_for_status()
            time.sleep(1)
        assert deploying.is_alive()
        server.start()
        ss.wait_running("faults", timeout=180)
        deploying.join(timeout=60)
        health = httpx.get(f"{base}/healthz", timeout=10).json()
        meta = httpx.get(f"{base}/metadata", timeout=10).json()
        serve.delete("faults")
    assert health["status"] == "ok" and health["model_version"] == v1
    assert meta["load_status"]["registry"]["reachable"] is True
    assert "DEPLOYING" in seen
