"""The model holder's swap policy with real ONNX sessions and a registry stand-in.

``fetch``/``resolve`` stand in for the MLflow registry; opening the session and the warm-up are
the real ones, so a corrupt graph or a model that contradicts its schema fails as in production.
"""

from __future__ import annotations

import pytest
from tiny_serving_model import SCHEMA, registered, tiny_onnx

from raylane.model.store import RegisteredModel
from raylane.serving.holder import ModelHolder

URI = "models:/credit@champion"


class Registry:
    """Versions by number; ``alias`` is the version the URI points at now."""

    def __init__(self) -> None:
        self.versions: dict[str, RegisteredModel] = {}
        self.alias = "1"
        self.fetched: list[str] = []

    def fetch(self, uri: str, tracking_uri: str | None) -> RegisteredModel:
        self.fetched.append(self.alias)
        return self.versions[self.alias]

    def resolve(self, uri: str, tracking_uri: str | None) -> str:
        return self.alias


@pytest.fixture(scope="module")
def good() -> bytes:
    return tiny_onnx()


@pytest.fixture()
def setup(good):
    reg = Registry()
    reg.versions["1"] = registered("1", good)
    reg.versions["2"] = registered("2", b"\x08\x07 not an onnx graph")
    # loads, but its schema promises three classes: the warm-up's output check refuses it
    three = SCHEMA.model_copy(update={"class_labels": ["a", "b", "c"]})
    reg.versions["3"] = RegisteredModel(name="credit", version="3", alias="champion",
                                        run_id="r", onnx_bytes=good, schema=three, metadata={})
    reg.versions["4"] = registered("4", good)
    loads: list[tuple[str, str, str]] = []
    holder = ModelHolder(on_load=lambda *a: loads.append(a), fetch=reg.fetch,
                         resolve=reg.resolve)
    return reg, holder, loads


def test_first_load_then_no_reload_while_the_alias_stays(setup, caplog):
    reg, holder, loads = setup
    with caplog.at_level("INFO", logger="ray.serve"):
        assert holder.ensure(URI, None) is True
    assert holder.current.version == "1" and holder.last_error is None
    # each stage of the load is timed and said in the load's log line
    timings = holder.current.timings
    assert list(timings) == ["fetch", "session", "warmup"]
    assert all(seconds >= 0 for seconds in timings.values()) and timings["session"] > 0
    (line,) = [m for m in caplog.messages if "loaded credit version 1" in m]
    assert "fetch " in line and "session " in line and "warmup " in line, line
    assert holder.ensure(URI, None) is False  # same version: nothing downloaded
    assert reg.fetched == ["1"] and loads == [("credit", "1", "loaded")]


@pytest.mark.parametrize("bad,error", [("2", "DecodeError: .*corrupt"),
                                       ("3", "WarmupError: warm-up: expected finite probab")])
def test_a_failed_swap_keeps_the_old_model_and_reports_the_error(setup, bad, error):
    import re

    reg, holder, loads = setup
    holder.ensure(URI, None)
    serving = holder.current
    reg.alias = bad
    assert holder.ensure(URI, None) is False
    assert holder.current is serving  # untouched: requests keep the old model
    err = holder.last_error
    assert err["version"] == bad and err["kept_version"] == "1" and err["model_uri"] == URI
    assert re.search(error, err["error"]), err["error"]
    assert loads[-1] == ("credit", bad, "failed")
    assert holder.ensure(URI, None) is False and reg.fetched == ["1", bad]  # not retried

    reg.alias = "4"  # a good version later: swapped in, the error cleared
    assert holder.ensure(URI, None) is True
    assert holder.current.version == "4" and holder.last_error is None
    assert loads[-1] == ("credit", "4", "swapped")


def test_a_failed_first_load_raises_and_serves_nothing(setup):
    reg, holder, loads = setup
    reg.alias = "3"
    with pytest.raises(Exception, match="warm-up"):
        holder.ensure(URI, None)
    assert holder.current is None
    assert holder.last_error["version"] is None and holder.last_error["kept_version"] is None
    assert loads == [(URI, "unknown", "failed")]
    reg.alias = "1"  # the replica's next reconfigure succeeds
    assert holder.ensure(URI, None) is True and holder.current.version == "1"


# ---------------------------------------------------------------- retries of failed loads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FlakyRegistry(Registry):
    """Downloads fail with the queued exceptions first (a registry or a network having a bad
    minute), then succeed."""

    def __init__(self, good: bytes) -> None:
        super().__init__()
        self.versions["1"] = registered("1", good)
        self.versions["2"] = registered("2", good)
        self.failures: list[Exception] = []

    def fetch(self, uri: str, tracking_uri: str | None) -> RegisteredModel:
        self.fetched.append(self.alias)
        if self.failures:
            raise self.failures.pop(0)
        return self.versions[self.alias]


def mlflow_503() -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    return MlflowException("registry is restarting", error_code=TEMPORARILY_UNAVAILABLE)


def wrapped(exc: Exception) -> Exception:
    """As model_store.resolve_version reports a registry failure: a ModelNotFoundError whose
    cause is what the registry client raised."""
    from raylane.model.store import ModelNotFoundError

    try:
        raise ModelNotFoundError(f"models:/credit@champion: {exc}") from exc
    except ModelNotFoundError as err:
        return err


@pytest.fixture()
def flaky(good):
    reg, clock = FlakyRegistry(good), Clock()
    loads: list[tuple[str, str, str]] = []
    holder = ModelHolder(on_load=lambda *a: loads.append(a), fetch=reg.fetch,
                         resolve=reg.resolve, clock=clock)
    holder.ensure(URI, None)
    return reg, holder, clock, loads


def test_a_transient_failure_is_retried_with_backoff_until_the_version_loads(flaky):
    import requests

    reg, holder, clock, loads = flaky
    reg.alias = "2"
    reg.failures = [requests.ConnectionError("connection reset"), wrapped(mlflow_503()),
                    TimeoutError("download timed out")]
    assert holder.ensure(URI, None) is False and holder.current.version == "1"
    status = holder.status()
    assert status["state"] == "retrying" and status["pending_version"] == "2"
    assert status["attempts"] == 1 and status["last_load_error"] == "transient: ConnectionError"
    first_delay = status["next_retry_at"] - clock.now
    assert first_delay > 0
    assert holder.retry_due() is False
    assert holder.ensure(URI, None) is False and reg.fetched == ["1", "2"]  # not before due

    clock.now += first_delay
    assert holder.retry_due() is True
    assert holder.ensure(URI, None) is False  # the registry answers 503 this time
    status = holder.status()
    assert status["attempts"] == 2 and status["last_load_error"] == "transient: ModelNotFoundError"
    assert status["next_retry_at"] - clock.now > first_delay  # backing off

    clock.now = status["next_retry_at"]
    assert holder.ensure(URI, None) is False and holder.status()["attempts"] == 3
    clock.now = holder.status()["next_retry_at"]
    assert holder.ensure(URI, None) is True and holder.current.version == "2"
    assert holder.status() == {"state": "current", "model_uri": URI, "pending_version": None,
                               "attempts": 0, "last_load_error": None, "next_retry_at": None,
                               "registry": {"reachable": True, "since": clock.now,
                                            "last_error": None}}
    assert holder.last_error is None and reg.fetched == ["1", "2", "2", "2", "2"]
    assert [o for _, _, o in loads] == ["loaded", "failed", "failed", "failed", "swapped"]


def test_transient_failures_are_never_given_up_and_the_backoff_is_capped(flaky):
    reg, holder, clock, _ = flaky
    reg.alias = "2"
    reg.failures = [ConnectionRefusedError("registry down")] * 30
    for _ in range(30):
        clock.now += 3600
        holder.ensure(URI, None)
    status = holder.status()
    assert status["state"] == "retrying" and status["attempts"] == 30
    assert status["next_retry_at"] - clock.now <= 300
    clock.now += 300
    assert holder.ensure(URI, None) is True and holder.current.version == "2"


@pytest.mark.parametrize("exc,attempts", [
    (None, 1),  # the good bytes under a schema promising 3 classes: warm-up fails
    ("missing_schema", 1),
    ("unknown", 3),  # an error of no known kind: given up once it repeated
])
def test_permanent_or_repeated_failures_are_given_up_and_reported(flaky, good, exc, attempts):
    from raylane.model.store import ModelNotFoundError

    reg, holder, clock, _ = flaky
    reg.alias = "2"
    if exc is None:
        three = SCHEMA.model_copy(update={"class_labels": ["a", "b", "c"]})
        reg.versions["2"] = RegisteredModel(name="credit", version="2", alias="champion",
                                            run_id="r", onnx_bytes=good, schema=three,
                                            metadata={})
        reason = "permanent: WarmupError"
    elif exc == "missing_schema":
        reg.failures = [ModelNotFoundError("no 'raylane_schema' metadata")] * 5
        reason = "permanent: ModelNotFoundError"
    else:
        reg.failures = [KeyError("surprise")] * 5
        reason = "unknown: KeyError"
    for _ in range(5):
        holder.ensure(URI, None)
        clock.now += 3600
    status = holder.status()
    assert status["state"] == "gave_up" and status["pending_version"] == "2"
    assert status["attempts"] == attempts and status["last_load_error"] == reason
    assert status["next_retry_at"] is None and holder.retry_due() is False
    assert reg.fetched.count("2") == attempts
    assert holder.current.version == "1"  # the old version keeps serving


def test_the_alias_moving_back_to_the_served_version_clears_a_pending_retry(flaky):
    reg, holder, _, _ = flaky
    reg.alias = "2"
    reg.failures = [TimeoutError("slow")]
    holder.ensure(URI, None)
    assert holder.status()["state"] == "retrying"
    reg.alias = "1"
    assert holder.ensure(URI, None) is False
    assert holder.status()["state"] == "current" and holder.retry_due() is False


def test_an_intra_op_threads_change_reopens_the_served_version(flaky):
    reg, holder, _, loads = flaky
    first = holder.current
    assert holder.current.onnx.session.get_session_options().intra_op_num_threads == 1
    assert holder.ensure(URI, None, 2) is True
    assert holder.current is not first and holder.current.version == "1"
    assert holder.current.onnx.session.get_session_options().intra_op_num_threads == 2
    assert reg.fetched == ["1"]  # the same version: opened again from its bytes, not downloaded
    assert list(holder.current.timings) == ["session", "warmup"]
    assert holder.ensure(URI, None, 2) is False
    assert [o for _, _, o in loads] == ["loaded", "swapped"]


def test_health_and_metadata_report_a_pending_version(flaky):
    from fastapi.testclient import TestClient

    from raylane.serving.api import bind, build_api
    from raylane.serving.dataplane import DataPlane
    from raylane.serving.protocols import PROTOCOLS
    from raylane.serving.telemetry import ServingTelemetry

    reg, holder, _, _ = flaky
    reg.alias = "2"
    reg.failures = [ConnectionResetError("reset by peer")]
    holder.ensure(URI, None)
    plane = DataPlane(holder, ServingTelemetry())
    api = build_api(PROTOCOLS)
    bind(api, plane, PROTOCOLS)
    with TestClient(api) as client:
        health = client.get("/healthz").json()
        meta = client.get("/metadata").json()
    assert health["model_version"] == "1" and health["load_state"] == "retrying"
    assert health["pending_version"] == "2"
    assert meta["version"] == "1" and meta["load_status"] == holder.status()
    assert meta["load_status"]["last_load_error"] == "transient: ConnectionResetError"


def test_failure_kinds():
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    from raylane.model.onnx_model import UnsafeModelError
    from raylane.model.store import ModelNotFoundError
    from raylane.serving.load_failures import failure_kind
    from raylane.serving.loaded_model import WarmupError

    def http_error(status: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(f"{status}", response=response)

    assert failure_kind(requests.ConnectionError("refused")) == "transient"
    assert failure_kind(http_error(503)) == "transient"
    assert failure_kind(http_error(429)) == "transient"
    assert failure_kind(wrapped(mlflow_503())) == "transient"
    assert failure_kind(MlflowException(  # MLflow's words for a request that got no answer
        "API request to http://mlflow:5000/api/2.0/mlflow/registered-models/alias failed with "
        "exception HTTPConnectionPool(...): Max retries exceeded")) == "transient"
    assert failure_kind(http_error(403)) == "unknown"
    assert failure_kind(wrapped(MlflowException("gone", error_code=RESOURCE_DOES_NOT_EXIST))) \
        == "permanent"
    for exc in (UnsafeModelError("external data"), WarmupError("bad output"),
                ModelNotFoundError("no raylane_schema metadata")):
        assert failure_kind(exc) == "permanent"
    assert failure_kind(KeyError("x")) == "unknown"
