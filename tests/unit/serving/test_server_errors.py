"""A fault of the model or the server is a 5xx in each protocol's error shape, counted as a
server error (never a 4xx blaming the client). In-process: the real app over real ONNX models."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper
from tiny_serving_model import SCHEMA, loaded, tiny_onnx

from raylane.serving.settings import ServingSettings

from .inprocess import make_client, make_plane, post

RECORDS = [{"age": 30.0, "income": 50.0, "home": "rent"}]


def broken_model():
    """A graph that needs an input its schema does not declare: every prediction fails in
    ONNX Runtime, whatever the client sends (a model fault, not a bad request)."""
    proto = onnx.load_model_from_string(tiny_onnx())
    proto.graph.input.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, [None, 1]))
    return loaded("1", proto.SerializeToString())


@pytest.fixture()
def plane():
    return make_plane(broken_model())


@pytest.fixture()
def client(plane):
    with make_client(plane) as c:
        yield c


def v2_body():
    return {"inputs": [{"name": c, "datatype": "BYTES" if c == "home" else "FP64", "shape": [1],
                        "data": [RECORDS[0][c]]} for c in ("age", "income", "home")]}


@pytest.mark.parametrize("batched", [True, False])
def test_a_model_failure_is_a_500_in_each_protocols_shape_and_counted(client, plane, batched):
    if not batched:
        plane.configure(ServingSettings.model_validate({"batching": {"enabled": False}}))
    r = post(client, "/predict", {"records": RECORDS})
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["reason"] == "model_failure" and body["field"] is None
    assert "extra" not in body["error"]  # the model's internals are logged, not sent
    r = post(client, "/v2/models/credit/infer", v2_body())
    assert r.status_code == 500 and r.json()["reason"] == "model_failure"
    r = post(client, "/invocations", {"dataframe_records": RECORDS})
    assert r.status_code == 500
    assert r.json()["error_code"] == "INTERNAL_ERROR" and r.json()["reason"] == "model_failure"
    telemetry = plane.telemetry
    assert telemetry._server_errors == {("model_failure", "predict"): 1,
                                        ("model_failure", "v2_infer"): 1,
                                        ("model_failure", "invocations"): 1}
    assert telemetry._rejected == {}  # not counted as client errors
    telemetry.flush()  # recorded in Ray's metrics without error


def test_a_client_fault_is_still_a_4xx(client, plane):
    plane.holder.current = loaded("1", tiny_onnx())
    r = post(client, "/predict", {"records": [{"age": "x", "income": 1.0, "home": "own"}]})
    assert r.status_code == 400 and plane.telemetry._server_errors == {}
    assert SCHEMA.feature_names == ["age", "income", "home"]


def test_a_client_gone_mid_body_is_not_a_server_error(plane):
    import asyncio

    from starlette.requests import Request

    from raylane.serving.protocols.native import predict

    messages = [{"type": "http.request", "body": b'{"records": [', "more_body": True},
                {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json")]}  # no content-length: streamed
    response = asyncio.run(predict(plane, Request(scope, receive)))
    assert response.status_code == 499
    assert plane.telemetry._server_errors == {}
    assert plane.telemetry._rejected == {("client_disconnected", "predict"): 1}
