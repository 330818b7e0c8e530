"""A replica's lifecycle without Ray: reconfigure against a poll under way, housekeeping that
survives its steps' failures, and a dead housekeeping task restarted by the health check.

Real ONNX sessions; a registry stand-in (``fetch``/``resolve``) that a test can hold mid-download.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from tiny_serving_model import registered, tiny_onnx

from raylane.model.store import RegisteredModel
from raylane.serving.prediction_log import PredictionLog
from raylane.serving.replica import Replica
from raylane.serving.telemetry import ServingTelemetry

A = "models:/credit@champion"
B = "models:/fraud@champion"


class Registry:
    """Two registered models; ``alias[uri]`` is the version a URI points at now. A download
    of a URI in ``held`` waits until the test releases it."""

    def __init__(self, good: bytes) -> None:
        self.good = good
        self.alias = {A: "1", B: "1"}
        self.held: dict[str, threading.Event] = {}
        self.downloading: dict[str, threading.Event] = {}
        self.fetched: list[tuple[str, str]] = []

    def hold(self, uri: str) -> None:
        self.held[uri] = threading.Event()
        self.downloading[uri] = threading.Event()

    def fetch(self, uri: str, tracking_uri: str | None) -> RegisteredModel:
        if uri in self.held:
            self.downloading[uri].set()
            assert self.held[uri].wait(10)
        self.fetched.append((uri, self.alias[uri]))
        return registered(self.alias[uri], self.good, name=uri.split("/")[1].split("@")[0])

    def resolve(self, uri: str, tracking_uri: str | None) -> str:
        return self.alias[uri]


@pytest.fixture(scope="module")
def good() -> bytes:
    return tiny_onnx()


async def until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def run(coro):
    return asyncio.run(coro)


def test_a_poll_under_way_does_not_undo_a_reconfigure(good):
    reg = Registry(good)

    async def main():
        replica = Replica(fetch=reg.fetch, resolve=reg.resolve)
        await replica.reconfigure({"model_uri": A, "poll_interval_s": 0})
        reg.hold(B)
        change = asyncio.create_task(replica.reconfigure({"model_uri": B, "poll_interval_s": 0}))
        assert await asyncio.to_thread(reg.downloading[B].wait, 10)  # B loading, lock held
        poll = asyncio.create_task(replica.poll())  # a poll starts meanwhile
        for _ in range(10):
            await asyncio.sleep(0)  # it is now waiting for the swap lock
        reg.held[B].set()
        await asyncio.gather(change, poll)
        served, configured = replica.holder.current.uri, replica.plane.settings.model_uri
        await replica.stop()
        return served, configured

    served, configured = run(main())
    assert (served, configured) == (B, B)
    assert reg.fetched == [(A, "1"), (B, "1")]  # A was not loaded back by the poll


def test_an_intra_op_threads_change_takes_effect(good):
    reg = Registry(good)

    async def main():
        replica = Replica(fetch=reg.fetch, resolve=reg.resolve)
        await replica.reconfigure({"model_uri": A, "poll_interval_s": 0})
        before = replica.holder.current.onnx.session.get_session_options().intra_op_num_threads
        await replica.reconfigure({"model_uri": A, "poll_interval_s": 0, "intra_op_threads": 2})
        after = replica.holder.current.onnx.session.get_session_options().intra_op_num_threads
        await replica.stop()
        return before, after

    assert run(main()) == (1, 2)
    assert reg.fetched == [(A, "1")]


class FailingTelemetry(ServingTelemetry):
    """Telemetry whose recording fails (e.g. the metrics agent is gone)."""

    async def flush_async(self) -> None:
        raise RuntimeError("metrics agent unreachable")


class FailingLog(PredictionLog):
    """A prediction log whose periodic flush raises (whichever name the replica calls)."""

    def _maybe_flush(self) -> None:
        raise OSError("disk full")

    maybe_flush = _maybe_flush


def fast(replica: Replica) -> Replica:
    replica.housekeeping_period_s = 0.01
    return replica


@pytest.mark.parametrize("broken", ["telemetry", "prediction_log"])
def test_housekeeping_keeps_polling_when_a_step_fails(good, tmp_path, broken):
    reg = Registry(good)

    async def main():
        telemetry = FailingTelemetry() if broken == "telemetry" else ServingTelemetry()
        replica = fast(Replica(telemetry=telemetry, fetch=reg.fetch, resolve=reg.resolve))
        await replica.reconfigure({"model_uri": A, "poll_interval_s": 0.05})
        if broken == "prediction_log":
            replica.plane.plog = FailingLog(directory=str(tmp_path))
            replica.plane.plog._rows = 1
        await asyncio.sleep(0.1)  # a few rounds of housekeeping, each failing
        reg.alias[A] = "2"  # the alias moves: the next poll must swap
        swapped = await until(lambda: replica.holder.current.version == "2")
        failures = dict(replica.housekeeping_failures)
        await replica.stop()
        return swapped, failures

    swapped, failures = run(main())
    assert swapped, "housekeeping stopped polling the registry"
    assert failures[broken] >= 2 and set(failures) == {broken}


def test_a_dead_housekeeping_task_is_restarted_by_the_health_check(good):
    reg = Registry(good)

    async def main():
        replica = fast(Replica(fetch=reg.fetch, resolve=reg.resolve))
        await replica.reconfigure({"model_uri": A, "poll_interval_s": 0.05})
        dead = replica._housekeeping
        dead.cancel()  # however it ended: no more polls
        await asyncio.gather(dead, return_exceptions=True)
        await replica.check_health()  # healthy (the model serves) and housekeeping restarted
        restarted = replica._housekeeping is not dead and not replica._housekeeping.done()
        reg.alias[A] = "2"
        swapped = await until(lambda: replica.holder.current.version == "2")
        restarts = replica.housekeeping_restarts
        await replica.stop()
        return restarted, swapped, restarts

    assert run(main()) == (True, True, 1)


def test_rows_the_prediction_log_drops_are_counted_once():
    telemetry = ServingTelemetry()
    added: list[float] = []
    telemetry.log_dropped.inc = lambda value=1.0, tags=None: added.append(value)
    for total in (0, 3, 3, 10):  # the log's running count, read every housekeeping round
        telemetry.prediction_log_dropped(total)
    assert added == [3, 7]
