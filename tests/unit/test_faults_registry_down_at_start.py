"""Fault: the registry is down when a replica starts.

Budget: the replica is not ready while it has no model (its first ``reconfigure`` has not
returned, so Ray Serve keeps it starting and sends it no traffic; ``check_health`` raises), it
does not fail (three failed starts and Ray Serve gives the deployment up), and it becomes ready
once the registry answers. A version that cannot load (a permanent failure) still fails the start.

The real replica and ONNX model; a registry stand-in whose calls fail with the error a refused
connection raises (``requests.ConnectionError``) until the test brings it back. (On real Ray Serve
with a real ``mlflow server``: tests/test_faults_mlflow_outage.py.)
"""

from __future__ import annotations

import asyncio

import pytest
import requests
from tiny_serving_model import registered, tiny_onnx

from raylane.model.store import ModelNotFoundError
from raylane.serving.replica import Replica

URI = "models:/credit@champion"


class DownRegistry:
    def __init__(self, good: bytes, error: Exception) -> None:
        self.good, self.error, self.up, self.calls = good, error, False, 0

    def fetch(self, uri: str, tracking_uri: str | None):
        self.calls += 1
        if not self.up:
            raise self.error
        return registered("1", self.good)


@pytest.fixture(scope="module")
def good() -> bytes:
    return tiny_onnx()


def test_a_replica_waits_for_the_registry_instead_of_failing(good):
    reg = DownRegistry(good, requests.ConnectionError("connection refused"))

    async def main():
        replica = Replica(fetch=reg.fetch, resolve=lambda uri, tracking: "1")
        replica.first_load_backoff_s = (0.01, 0.05)
        start = asyncio.create_task(replica.reconfigure({"model_uri": URI, "poll_interval_s": 0}))
        while reg.calls < 4:  # several attempts, backing off
            await asyncio.sleep(0.01)
            assert not start.done(), start.exception() if start.done() else None
        with pytest.raises(RuntimeError, match="no model loaded"):
            await replica.check_health()
        down = replica.holder.registry
        reg.up = True
        await asyncio.wait_for(start, 5)  # ready once the registry answers
        await replica.check_health()
        version = replica.holder.current.version
        await replica.stop()
        return down, version, replica.holder.registry

    down, version, up = asyncio.run(main())
    assert version == "1"
    assert down["reachable"] is False and down["last_error"] == "transient: ConnectionError"
    assert up["reachable"] is True


def test_a_permanent_failure_still_fails_the_start(good):
    reg = DownRegistry(good, ModelNotFoundError("models:/credit@champion: no such alias"))

    async def main():
        replica = Replica(fetch=reg.fetch, resolve=lambda uri, tracking: "1")
        replica.first_load_backoff_s = (0.01, 0.05)
        with pytest.raises(ModelNotFoundError):
            await replica.reconfigure({"model_uri": URI, "poll_interval_s": 0})
        await replica.stop()

    asyncio.run(main())
    assert reg.calls == 1
