"""Serving input hardening (issue 9, defects 1, 3, 10, 11): values a column cannot hold, strings
ONNX Runtime cannot take, CSV quirks, replies that cannot be encoded, and what ``/metadata``
shows. In-process (no Ray, no server): the real app over a real tiny ONNX model."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from tiny_serving_model import SCHEMA, loaded, tiny_onnx

from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.model.store import RegisteredModel
from raylane.serving.api import bind, build_api
from raylane.serving.columns import RequestError, decode_json
from raylane.serving.dataplane import DataPlane
from raylane.serving.http_io import json_response
from raylane.serving.predictor import LoadedModel, ModelHolder
from raylane.serving.protocols import PROTOCOLS, native, v2
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry

# The tiny model, but "age" was an int64 column in training (the graph takes float32 anyway).
INT_SCHEMA = FeatureSchema(
    task="classification", target="y", class_labels=["bad", "good"],
    columns=[
        ColumnSpec(name="age", kind="numeric", dtype="int64"),
        ColumnSpec(name="income", kind="numeric", dtype="float64"),
        ColumnSpec(name="home", kind="categorical", dtype="object", categories=["own", "rent"]),
    ],
)
NUMERIC_SCHEMA = FeatureSchema(
    task="regression", target="y",
    columns=[ColumnSpec(name="age", kind="numeric", dtype="int64"),
             ColumnSpec(name="income", kind="numeric", dtype="float64")],
)


def int_model() -> LoadedModel:
    onnx_bytes = tiny_onnx()
    reg = RegisteredModel(name="credit", version="1", alias="champion", run_id="run",
                          onnx_bytes=onnx_bytes, schema=INT_SCHEMA, metadata={})
    return LoadedModel(registered=reg, onnx=OnnxModel(onnx_bytes, INT_SCHEMA),
                       uri="models:/credit@champion")


def make_client(model, settings: dict | None = None):
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    plane.configure(ServingSettings.model_validate(settings or {}))
    plane.holder.current = model
    api = build_api(PROTOCOLS)
    bind(api, plane, PROTOCOLS)
    return plane, TestClient(api)


@pytest.fixture(scope="module")
def client():
    _, c = make_client(int_model())
    with c:
        yield c


def post(client, path, body: bytes, content_type="application/json"):
    return client.post(path, content=body, headers={"content-type": content_type})


def strict_json(response) -> dict:
    """The body as a strict JSON parser (no lone surrogates, no NaN) reads it."""
    return orjson.loads(response.content)


def record(age: str = "30", income: str = "50", home: str = '"rent"') -> bytes:
    return f'{{"records": [{{"age": {age}, "income": {income}, "home": {home}}}]}}'.encode()


# ---------------------------------------------------------------- 1: values a column cannot hold


@pytest.mark.parametrize("body,field,reason,fragment", [
    # orjson reads this as a float (1.2e29), the stdlib as an int: both are over int64
    (record(age="123456789012345678901234567890"), "age", "out_of_range", "int64"),
    (record(age="9223372036854775808"), "age", "out_of_range", "int64"),  # 2**63
    (record(age="-9223372036854777856"), "age", "out_of_range", "int64"),  # -2**63 - 2048
    (record(age="1e19"), "age", "out_of_range", "int64"),
    (record(age="1" + "0" * 400), "age", "out_of_range", "int64"),  # stdlib: a Python int
    (record(age="30.5"), "age", "wrong_type", "integer"),
    (record(income="1" + "0" * 400), "income", "non_finite", "finite"),  # OverflowError before
    (record(income="1e39"), "income", "non_finite", "finite"),  # float32 overflow
    (record(income="-1e39"), "income", "non_finite", "finite"),
])
def test_values_the_column_cannot_hold_are_400_naming_the_field(client, body, field, reason,
                                                                 fragment):
    r = post(client, "/predict", body)
    assert r.status_code == 400, r.text
    out = strict_json(r)
    assert (out["field"], out["reason"]) == (field, reason)
    assert fragment in out["error"] and repr(field) in out["error"]


@pytest.mark.parametrize("age", ["9223372036854775807", "-9223372036854775808", "30.0", "0",
                                 "true", "null"])
def test_values_an_int64_column_holds_are_accepted(client, age):
    assert post(client, "/predict", record(age=age)).status_code == 200


def test_the_range_check_covers_columns_data_csv_and_v2(client):
    big = "123456789012345678901234567890"
    split = f'{{"columns": ["age", "income", "home"], "data": [[{big}, 1, "own"]]}}'.encode()
    csv = f"age,income,home\n{big},1,own\n".encode()
    tensors = [{"name": "age", "datatype": "INT64", "shape": [1], "data": [1e30]},
               {"name": "income", "datatype": "FP64", "shape": [1], "data": [1.0]},
               {"name": "home", "datatype": "BYTES", "shape": [1], "data": ["own"]}]
    for path, body, ctype in [
        ("/predict", split, "application/json"),
        ("/invocations", csv, "text/csv"),
        ("/v2/models/credit/infer", json.dumps({"inputs": tensors}).encode(), "application/json"),
    ]:
        r = post(client, path, body, ctype)
        assert r.status_code == 400, (path, r.text)
        assert (strict_json(r)["field"], strict_json(r)["reason"]) == ("age", "out_of_range")


def test_one_v2_matrix_is_checked_per_column():
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 2],
                        "data": [[1, 2.5], [1e20, 3.0]]}]}
    with pytest.raises(RequestError) as err:
        v2.parse_v2(body, NUMERIC_SCHEMA, 10)
    assert (err.value.field, err.value.reason) == ("age", "out_of_range")
    assert "row 1" in err.value.message
    feeds, n = v2.parse_v2({"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2],
                                        "data": [7, 2.5]}]}, NUMERIC_SCHEMA, 10)
    assert n == 1 and feeds["age"].tolist() == [[7.0]] and feeds["income"].tolist() == [[2.5]]


def test_an_error_naming_a_lone_surrogate_is_still_json(client):
    # the stdlib fallback parser accepts the escape; the column name is echoed in the error
    body = b'{"records": [{"age": 1, "income": 2, "home": "own", "\\ud800x": 1}]}'
    r = post(client, "/predict", body)
    assert r.status_code == 400, r.text
    out = strict_json(r)
    assert out["reason"] == "unknown_column" and out["field"] == "\\ud800x"


@pytest.mark.parametrize("request_id,echoed", [
    ('"\\udfff"', "\\udfff"),  # a lone surrogate: escaped
    ('{"a": ["\\ud800", NaN]}', {"a": ["\\ud800", None]}),  # NaN: stdlib parser, null out
])
def test_a_v2_id_that_cannot_be_encoded_as_is_is_echoed_safely(client, request_id, echoed):
    tensors = ('[{"name": "age", "datatype": "INT64", "shape": [1], "data": [30]},'
               '{"name": "income", "datatype": "FP32", "shape": [1], "data": [5]},'
               '{"name": "home", "datatype": "BYTES", "shape": [1], "data": ["own"]}]')
    body = f'{{"id": {request_id}, "inputs": {tensors}}}'.encode()
    r = post(client, "/v2/models/credit/infer", body)
    assert r.status_code == 200, r.text
    assert json.loads(r.content)["id"] == echoed


def test_json_response_never_fails_to_encode():
    obj = {"error": "bad \ud800 name", "field": "\udc80", "n": 10**30,
           "a": np.array([1.0, np.nan]), "nested": [{"k\ud800": (1, 2)}], "other": object()}
    response = json_response(obj, 400)
    assert response.status_code == 400
    out = orjson.loads(response.body)
    assert out["error"] == "bad \\ud800 name" and out["field"] == "\\udc80"
    assert out["a"] == [1.0, None] and out["nested"] == [{"k\\ud800": [1, 2]}]
    assert json.loads(response.body)["n"] == 10**30


# ---------------------------------------------------------------- 3: strings ONNX cannot take


@pytest.mark.parametrize("body", [
    record(home='"\\ud800"'),  # an escaped lone surrogate (the stdlib parser accepts it)
    record(home='"X"').replace(b"X", b"\xed\xa0\x80"),  # a surrogate encoded as UTF-8 bytes
])
def test_an_unencodable_category_is_400_naming_the_column_at_parse_time(client, body):
    with pytest.raises(RequestError) as err:
        native.parse_predict(decode_json(body), SCHEMA, 10)
    assert (err.value.field, err.value.reason) == ("home", "invalid_string")
    assert "row 0" in err.value.message
    r = post(client, "/predict", body)
    assert r.status_code == 400
    assert (strict_json(r)["field"], strict_json(r)["reason"]) == ("home", "invalid_string")


def test_an_unencodable_v2_bytes_element_is_400_naming_the_column(client):
    body = (b'{"inputs": [{"name": "age", "datatype": "INT64", "shape": [1], "data": [30]},'
            b'{"name": "income", "datatype": "FP32", "shape": [1], "data": [5]},'
            b'{"name": "home", "datatype": "BYTES", "shape": [1], "data": ["\\udcff"]}]}')
    r = post(client, "/v2/models/credit/infer", body)
    assert r.status_code == 400
    assert (strict_json(r)["field"], strict_json(r)["reason"]) == ("home", "invalid_string")


def test_invalid_utf8_is_400(client):
    r = post(client, "/predict", record(home='"x"').replace(b'"x"', b'"\xff"'))
    assert r.status_code == 400 and strict_json(r)["reason"] == "malformed_json"
    r = post(client, "/invocations", b"age,income,home\n1,2,own\n3,4,\xff\n", "text/csv")
    assert r.status_code == 400
    out = strict_json(r)
    assert out["reason"] == "malformed_csv" and "line 3" in out["message"]


# ---------------------------------------------------------------- 10: CSV


def test_csv_row_with_extra_cells_is_400_naming_the_row(client):
    csv = b"age,income,home\n30,50,rent\n\n31,50,own,surplus\n"
    r = post(client, "/invocations", csv, "text/csv")
    assert r.status_code == 400, r.text
    out = strict_json(r)
    assert out["reason"] == "wrong_shape" and out["field"] == "csv row 1"
    assert "line 4" in out["message"] and "4 cells" in out["message"]


def test_csv_row_with_missing_cells_is_400_naming_the_row(client):
    r = post(client, "/invocations", b"age,income,home\n30,50\n", "text/csv")
    assert r.status_code == 400
    out = strict_json(r)
    assert out["field"] == "csv row 0" and "line 2" in out["message"]


def test_csv_byte_order_mark_is_stripped(client):
    csv = b"age,income,home\n30,50,rent\n"
    plain = post(client, "/invocations", csv, "text/csv")
    bom = post(client, "/invocations", b"\xef\xbb\xbf" + csv, "text/csv")
    assert (plain.status_code, bom.status_code) == (200, 200), bom.text
    assert bom.json()["predictions"] == plain.json()["predictions"]


# ---------------------------------------------------------------- 11: /metadata


def test_metadata_shows_no_training_categories_by_default():
    _, c = make_client(loaded("1"))
    with c:
        meta = c.get("/metadata").json()
    home = {i["name"]: i for i in meta["inputs"]}["home"]
    assert "categories" not in home and home["category_count"] == 2
    assert '"rent"' not in json.dumps(meta) and '"own"' not in json.dumps(meta)


def test_metadata_lists_categories_only_when_opted_in_and_bounded():
    _, c = make_client(loaded("1"), {"metadata_categories": 1})
    with c:
        home = {i["name"]: i for i in c.get("/metadata").json()["inputs"]}["home"]
    assert home["categories"] == ["own"] and home["category_count"] == 2
    with pytest.raises(ValueError):
        ServingSettings.model_validate({"metadata_categories": 10_000})


def test_metadata_reports_a_load_error_without_its_text():
    secret = "connection to https://user:hunter2@mlflow.internal/api failed"

    def fetch(uri, tracking_uri):
        raise ConnectionError(secret)

    plane, c = make_client(loaded("1"))
    plane.holder = ModelHolder(fetch=fetch, resolve=lambda uri, tracking: "2")
    plane.holder.current = loaded("1")
    assert plane.holder.ensure("models:/credit@champion", None) is False
    assert secret in json.dumps(plane.holder.last_error)  # the holder (and the log) keep it
    with c:
        r = c.get("/metadata")
        assert r.status_code == 200
        last = r.json()["last_error"]
        assert "hunter2" not in r.text and "mlflow.internal" not in r.text
        assert last["reason"] == "load_failed" and last["version"] == "2"
        assert last["kept_version"] == "1"
        plane.holder.current = None
        r = c.get("/metadata")
        assert r.status_code == 503 and "hunter2" not in r.text
        assert r.json()["last_error"]["reason"] == "load_failed"
