"""Each protocol in-process (no Ray, no server): good requests, and bad ones -> its 4xx body.

The app is the real one (:func:`raylane.serving.api.build_api`) over a real tiny ONNX model; the
ASGI calls go through Starlette's test client.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tiny_serving_model import loaded

from .inprocess import make_client, make_plane

RECORDS = [{"age": 30.0, "income": 50.0, "home": "rent"}, {"age": None, "income": 9.0,
                                                           "home": None}]
NAMES = "['age', 'income', 'home']"


@pytest.fixture(scope="module")
def model():
    return loaded("1")


@pytest.fixture()
def plane(model):
    return make_plane(model, {"limits": {"max_rows": 5, "max_body_bytes": 2048}})


@pytest.fixture()
def client(plane):
    with make_client(plane) as c:
        yield c


def post(client, path, body, content_type="application/json", **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=data, headers={"content-type": content_type, **headers})


def want(model, records=RECORDS):
    """The labels and probabilities the model gives ``records`` directly."""
    pred = model.onnx.predict_frame(pd.DataFrame(records))
    return [["bad", "good"][i] for i in pred.labels], pred.probabilities


def err(message, field, reason):
    return {"error": message, "field": field, "reason": reason}


def mlflow_err(code, message, field, reason):
    return {"error_code": code, "message": message, "field": field, "reason": reason}


# ---------------------------------------------------------------- native /predict


def test_predict_records_and_columns(client, model):
    labels, probs = want(model)
    r = post(client, "/predict", {"records": RECORDS})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "credit" and out["model_version"] == "1"
    assert out["predictions"] == labels and out["class_labels"] == ["bad", "good"]
    np.testing.assert_allclose(out["probabilities"], probs, rtol=1e-5, atol=1e-7)
    cols = ["home", "income", "age"]
    split = {"columns": cols, "data": [[rec[c] for c in cols] for rec in RECORDS]}
    again = post(client, "/predict", split).json()
    assert again.pop("prediction_ids") != out.pop("prediction_ids")  # new ids per prediction
    assert again == out


@pytest.mark.parametrize("body,ctype,status,expected", [
    ({"records": [{"age": 1, "home": "own"}]}, None, 400,
     err(f"records[0]: missing column(s) ['income']; the model expects {NAMES}", "income",
         "missing_column")),
    ({"records": [{"age": "abc", "income": 1, "home": "own"}]}, None, 400,
     err("column 'age': expected a number or null, got a string 'abc' (row 0)", "age",
         "wrong_type")),
    ({"rows": []}, None, 400,
     err('body: expected {"records": [...]} or {"columns": [...], "data": [[...]]}',
         "records", "missing_field")),
    ({"records": RECORDS * 3}, None, 400,
     err("records: 6 rows is over the limit of 5 rows per request; split the batch", "records",
         "too_many_rows")),
    ([1], None, 400, err('body: expected a JSON object with "records" or "columns" + "data", '
                         "got list", "body", "wrong_type")),
    (b"", None, 400, err("empty body: expected a JSON object", "body", "empty_body")),
    ({"records": RECORDS}, "text/plain", 415,
     err("content type 'text/plain' is not supported; expected application/json",
         "Content-Type", "unsupported_media_type")),
    (b" " * 3000, None, 413,
     err("body is over the limit of 2048 bytes; send fewer rows per request", "body",
         "body_too_large")),
])
def test_predict_bad_input_is_the_native_error_body(client, body, ctype, status, expected):
    r = post(client, "/predict", body, ctype or "application/json")
    assert (r.status_code, r.json()) == (status, expected)


def test_malformed_json_names_the_body(client):
    r = post(client, "/predict", b'{"records": [')
    assert r.status_code == 400 and r.json()["reason"] == "malformed_json"
    assert r.json()["error"].startswith("malformed JSON: ") and r.json()["field"] == "body"


def test_no_model_is_503_in_each_protocols_shape(client, plane):
    plane.holder.current = None
    assert post(client, "/predict", {"records": RECORDS}).json() == err(
        "no model loaded yet", None, "not_ready")
    r = post(client, "/invocations", {"instances": RECORDS})
    assert (r.status_code, r.json()) == (503, mlflow_err(
        "TEMPORARILY_UNAVAILABLE", "no model loaded yet", None, "not_ready"))
    r = post(client, "/v2/models/credit/infer", {"inputs": []})
    assert (r.status_code, r.json()) == (503, err("no model loaded yet", None, "not_ready"))
    assert client.get("/healthz").status_code == 503
    assert client.get("/ping").status_code == 503 and client.get("/ping").text == "\n"
    assert client.get("/v2/health/ready").json() == {"ready": False}


# ---------------------------------------------------------------- Open Inference Protocol (V2)


def v2_body(records=RECORDS, **extra):
    inputs = [{"name": c, "datatype": "BYTES" if c == "home" else "FP64",
               "shape": [len(records)], "data": [r[c] for r in records]}
              for c in ("age", "income", "home")]
    return {"inputs": inputs, **extra}


def test_v2_infer_and_metadata(client, model):
    labels, probs = want(model)
    for path in ("/v2/models/credit/infer", "/v2/models/credit/versions/1/infer"):
        r = post(client, path, v2_body(id="7"))
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["id"] == "7" and out["model_version"] == "1"
        by_name = {o["name"]: o for o in out["outputs"]}
        assert by_name["label"] == {"name": "label", "datatype": "BYTES", "shape": [2],
                                    "data": labels}
        assert by_name["probabilities"]["shape"] == [2, 2]
        np.testing.assert_allclose(by_name["probabilities"]["data"], probs.reshape(-1),
                                   rtol=1e-5, atol=1e-7)
    only = post(client, "/v2/models/credit/infer", v2_body(outputs=[{"name": "label"}]))
    assert [o["name"] for o in only.json()["outputs"]] == ["label"]
    meta = client.get("/v2/models/credit").json()
    assert meta["versions"] == ["1"] and [i["name"] for i in meta["inputs"]] == [
        "age", "income", "home"]


@pytest.mark.parametrize("path,body,headers,status,expected", [
    ("/v2/models/nope/infer", {"inputs": []}, {}, 404,
     err("unknown model 'nope'; this server serves 'credit'", "model_name", "unknown_model")),
    ("/v2/models/credit/versions/9/infer", v2_body(), {}, 404,
     err("model 'credit' version '9' is not loaded; serving version '1'", "model_version",
         "unknown_version")),
    ("/v2/models/credit/infer", v2_body(), {"Inference-Header-Content-Length": "9"}, 400,
     err("the binary tensor extension is not supported; send JSON tensors (tritonclient.http: "
         "binary_data=False for inputs and outputs)", "Inference-Header-Content-Length",
         "binary_tensor")),
    ("/v2/models/credit/infer", {"inputs": []}, {}, 400,
     err("inputs: expected a non-empty list of tensors", "inputs", "missing_field")),
    ("/v2/models/credit/infer", v2_body(outputs=[{"name": "logits"}]), {}, 400,
     err("outputs: unknown output(s) ['logits']; the model has ['label', 'probabilities']",
         "outputs", "unknown_output")),
    ("/v2/models/credit/infer", {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3],
                                             "data": [1, 2, 3]}]}, {}, 400,
     err("input 'x': one [N, F] tensor needs a model with only numeric features; this model "
         "has categorical columns ['home']: send one input per column", "x", "wrong_shape")),
    ("/v2/models/credit/infer", {"inputs": [{"name": "age", "datatype": "FLOAT", "shape": [1],
                                             "data": [1]}]}, {}, 400,
     err("inputs[0] 'age': datatype 'FLOAT' is not one of ['BOOL', 'BYTES', 'FP16', 'FP32', "
         "'FP64', 'INT16', 'INT32', 'INT64', 'INT8', 'UINT16', 'UINT32', 'UINT64', 'UINT8']",
         "age", "wrong_type")),
])
def test_v2_bad_requests(client, path, body, headers, status, expected):
    r = post(client, path, body, **headers)
    assert (r.status_code, r.json()) == (status, expected)


def test_v2_unknown_model_metadata_is_404(client):
    r = client.get("/v2/models/credit/versions/2/ready")
    assert r.status_code == 404 and r.json()["reason"] == "unknown_version"


# ---------------------------------------------------------------- MLflow scoring


def test_invocations_json_and_csv(client, model):
    labels, _ = want(model)
    cols = ["age", "income", "home"]
    split = {"dataframe_split": {"columns": cols, "data": [[r[c] for c in cols] for r in RECORDS]}}
    assert post(client, "/invocations", split).json()["predictions"] == labels
    csv = b"age,income,home\n30,50,rent\n,9,\n"
    r = post(client, "/invocations", csv, "text/csv")
    assert (r.status_code, r.json()["predictions"]) == (200, labels)
    assert client.get("/ping").text == "\n" and client.get("/version").text.startswith("raylane")


@pytest.mark.parametrize("body,ctype,status,expected", [
    ({"instances": RECORDS, "inputs": RECORDS}, None, 400, mlflow_err(
        "BAD_REQUEST", "body: expected exactly one of ['dataframe_split', 'dataframe_records', "
        "'instances', 'inputs'], got ['instances', 'inputs']", "body", "ambiguous_body")),
    (b"age,income,home\nabc,1,own\n", "text/csv", 400, mlflow_err(
        "BAD_REQUEST", "column 'age': expected a number or an empty cell, got 'abc' (row 0)",
        "age", "wrong_type")),
    ({"instances": RECORDS}, "text/plain", 415, mlflow_err(
        "UNSUPPORTED_MEDIA_TYPE", "content type 'text/plain' is not supported; expected "
        "application/json or text/csv", "Content-Type", "unsupported_media_type")),
    (b" " * 3000, None, 413, mlflow_err(
        "PAYLOAD_TOO_LARGE", "body is over the limit of 2048 bytes; send fewer rows per request",
        "body", "body_too_large")),
])
def test_invocations_bad_input_is_the_mlflow_error_body(client, body, ctype, status, expected):
    r = post(client, "/invocations", body, ctype or "application/json")
    assert (r.status_code, r.json()) == (status, expected)


# ---------------------------------------------------------------- what FastAPI answers


def test_unknown_route_and_wrong_method_are_json(client):
    r = client.get("/nope")
    assert (r.status_code, r.json()) == (404, err("no route /nope", None, "not_found"))
    r = client.get("/predict")
    assert (r.status_code, r.json()) == (405, err("Method Not Allowed", None,
                                                  "method_not_allowed"))


def test_the_documented_request_models_accept_the_bodies_the_parsers_accept(client):
    from raylane.serving.protocols import mlflow_scoring, native, v2_datamodels

    cols = ["age", "income", "home"]
    split = {"columns": cols, "data": [[r[c] for c in cols] for r in RECORDS]}
    examples = [
        ("/predict", {"records": RECORDS}, native.PredictRecords),
        ("/predict", split, native.PredictSplit),
        ("/v2/models/credit/infer", v2_body(id="1", outputs=[{"name": "label"}]),
         v2_datamodels.V2InferRequest),
        ("/invocations", {"dataframe_split": split}, mlflow_scoring.InvocationsRequest),
        ("/invocations", {"dataframe_records": RECORDS}, mlflow_scoring.InvocationsRequest),
        ("/invocations", {"instances": RECORDS}, mlflow_scoring.InvocationsRequest),
        ("/invocations", {"inputs": {c: [r[c] for r in RECORDS] for c in cols}},
         mlflow_scoring.InvocationsRequest),
    ]
    for path, body, model in examples:
        assert post(client, path, body).status_code == 200, (path, body)
        model.model_validate(body)  # the OpenAPI description admits it
