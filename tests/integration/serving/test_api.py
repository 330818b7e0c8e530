"""Every route, every protocol shape and the whole bad-input list, on real Ray Serve over HTTP.

Two applications in one Serve instance: the credit classifier (mixed numeric and categorical
columns) at ``/`` and an all-numeric diamonds regressor at ``/diamonds``, both loaded from a real
MLflow registry (SQLite + local artifacts) by the ``champion`` alias.
"""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import serving as ss

from raylane.model.onnx_model import OnnxModel

pytestmark = pytest.mark.slow


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: NaN -> None (a missing value)."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve_api")
    uri = ss.tracking_uri_for(tmp)
    credit, dia = ss.train("credit"), ss.train("diamonds")
    credit_onnx = ss.publish_trained(uri, "credit", credit).onnx_bytes
    dia_onnx = ss.publish_trained(uri, "diamonds", dia).onnx_bytes
    credit_schema, credit_X, dia_schema, dia_X = credit.schema, credit.X, dia.schema, dia.X
    log_dir = tmp / "prediction_log"
    with ss.ray_serve() as base:
        from ray import serve

        from raylane.serving.app import ModelServer

        opts = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}}
        credit_cfg = ss.settings(
            uri, "models:/credit@champion",
            prediction_log={"enabled": True, "directory": str(log_dir), "sample_rate": 1.0,
                            "flush_rows": 5, "flush_interval_s": 1.0},
        )
        serve.run(ModelServer.options(user_config=credit_cfg, **opts).bind(), name="credit",
                  route_prefix="/", blocking=False)
        serve.run(
            ModelServer.options(user_config=ss.settings(uri, "models:/diamonds@champion"),
                                **opts).bind(),
            name="diamonds", route_prefix="/diamonds", blocking=False,
        )
        ss.wait_running("credit")
        ss.wait_running("diamonds")
        with httpx.Client(base_url=base, timeout=30) as client:
            yield {
                "client": client,
                "credit": (OnnxModel(credit_onnx, credit_schema), credit_schema, credit_X),
                "diamonds": (OnnxModel(dia_onnx, dia_schema), dia_schema, dia_X),
                "log_dir": log_dir,
            }


def post(client, path, body, content_type="application/json", **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=data, headers={"content-type": content_type, **headers})


# ---------------------------------------------------------------- health, metadata, OpenAPI


def test_health_routes(env):
    c = env["client"]
    assert c.get("/healthz").json() == {"status": "ok", "model_name": "credit",
                                        "model_version": "1", "load_state": "current",
                                        "pending_version": None}
    for path in ("/ping", "/health", "/v2/health/live", "/v2/health/ready"):
        assert c.get(path).status_code == 200, path
    assert c.get("/v2/health/live").json() == {"live": True}
    assert c.get("/v2/health/ready").json() == {"ready": True}
    assert c.get("/version").text.startswith("raylane ")
    assert c.get("/v2").json()["name"] == "raylane"
    assert c.get("/diamonds/healthz").json()["model_name"] == "diamonds"


def test_model_metadata(env):
    c = env["client"]
    _, schema, _ = env["credit"]
    meta = c.get("/metadata").json()
    assert meta["name"] == "credit" and meta["version"] == "1" and meta["alias"] == "champion"
    assert meta["run_id"] and meta["task"] == "classification" and meta["target"] == "Status"
    assert [i["name"] for i in meta["inputs"]] == schema.feature_names
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    assert meta["class_labels"] == schema.class_labels and meta["last_error"] is None

    v2 = c.get("/v2/models/credit").json()
    assert v2["name"] == "credit" and v2["versions"] == ["1"]
    assert v2["platform"] == "onnxruntime_onnx"
    types = {i["name"]: i["datatype"] for i in v2["inputs"]}
    assert types["Home"] == "BYTES" and types["Age"] == "FP32"
    assert c.get("/v2/models/credit/versions/1").json() == v2
    assert c.get("/v2/models/credit/ready").json() == {"ready": True}
    assert c.get("/v2/models/credit/versions/1/ready").status_code == 200


@pytest.mark.parametrize("path", [
    "/v2/models/nope", "/v2/models/nope/ready", "/v2/models/credit/versions/9",
    "/v2/models/credit/versions/9/ready",
])
def test_unknown_model_or_version_is_404(env, path):
    r = env["client"].get(path)
    assert r.status_code == 404
    assert "error" in r.json() and ("nope" in r.json()["error"] or "'9'" in r.json()["error"])


def test_unknown_model_infer_is_404(env):
    r = post(env["client"], "/v2/models/nope/infer", {"inputs": []})
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["error"]


def test_openapi_describes_every_route(env):
    spec = env["client"].get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("/predict", "post"), ("/healthz", "get"), ("/metadata", "get"), ("/v2", "get"),
        ("/v2/health/live", "get"), ("/v2/health/ready", "get"), ("/v2/models/{name}", "get"),
        ("/v2/models/{name}/versions/{version}", "get"), ("/v2/models/{name}/ready", "get"),
        ("/v2/models/{name}/versions/{version}/ready", "get"),
        ("/v2/models/{name}/infer", "post"), ("/v2/models/{name}/versions/{version}/infer", "post"),
        ("/invocations", "post"), ("/ping", "get"), ("/health", "get"), ("/version", "get"),
    }
    assert {(p, m) for p, ops in paths.items() for m in ops} == expected
    components = spec["components"]["schemas"]
    body = paths["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = [r["$ref"].rsplit("/", 1)[1] for r in body["oneOf"]]
    assert refs == ["PredictRecords", "PredictSplit"] and all(r in components for r in refs)
    assert "text/csv" in paths["/invocations"]["post"]["requestBody"]["content"]
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "V2InferRequest")
    assert "V2Tensor" in components
    for code in ("400", "404", "413", "415"):
        assert code in infer["responses"]
    ok = paths["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("PredictResponse")


# ---------------------------------------------------------------- the protocols


def test_predict_records_and_columns_classification(env):
    c = env["client"]
    model, schema, X = env["credit"]
    rows = X.head(5)
    want = model.predict_frame(rows)
    r = post(c, "/predict", {"records": _records(rows)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "credit" and out["model_version"] == "1"
    assert out["predictions"] == [schema.class_labels[i] for i in want.labels]
    np.testing.assert_allclose(out["probabilities"], want.probabilities, rtol=1e-5, atol=1e-6)
    recs = _records(rows)
    cols = list(reversed(schema.feature_names))  # any column order
    r2 = post(c, "/predict", {"columns": cols, "data": [[rec[k] for k in cols] for rec in recs]})
    again = r2.json()
    assert r2.status_code == 200 and again.pop("prediction_ids") != out.pop("prediction_ids")
    assert again == out


def test_null_numeric_is_a_missing_value(env):
    c = env["client"]
    model, _, X = env["credit"]
    rec = _records(X.head(1))[0]
    rec["Income"] = None
    rec["Home"] = None
    r = post(c, "/predict", {"records": [rec]})
    assert r.status_code == 200, r.text
    want = model.predict_frame(pd.DataFrame([rec]))
    np.testing.assert_allclose(r.json()["probabilities"], want.probabilities, atol=1e-6)


def test_predict_regression(env):
    c = env["client"]
    model, _, X = env["diamonds"]
    rows = X.head(4)
    r = post(c, "/diamonds/predict", {"records": _records(rows)})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "diamonds" and "probabilities" not in out
    np.testing.assert_allclose(out["predictions"], model.predict_frame(rows).values, rtol=1e-5)


def test_v2_infer_one_input_per_column(env):
    c = env["client"]
    model, schema, X = env["credit"]
    rows = _records(X.head(3))
    inputs = []
    for col in schema.columns:
        values = [r[col.name] for r in rows]
        inputs.append({"name": col.name, "shape": [3, 1] if col.name == "Age" else [3],
                       "datatype": "FP64" if col.kind == "numeric" else "BYTES",
                       "data": [[v] for v in values] if col.name == "Age" else values})
    body = {"id": "42", "parameters": {"content_type": "pd"}, "inputs": inputs}
    for path in ("/v2/models/credit/infer", "/v2/models/credit/versions/1/infer"):
        r = post(c, path, body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["id"] == "42" and out["model_name"] == "credit" and out["model_version"] == "1"
        by_name = {o["name"]: o for o in out["outputs"]}
        want = model.predict_frame(pd.DataFrame(rows))
        assert by_name["label"]["datatype"] == "BYTES"
        assert by_name["label"]["data"] == [schema.class_labels[i] for i in want.labels]
        probs = by_name["probabilities"]
        assert probs["shape"] == [3, 2] and probs["datatype"] == "FP32"
        np.testing.assert_allclose(np.reshape(probs["data"], (3, 2)), want.probabilities,
                                   atol=1e-6)
    only = post(c, "/v2/models/credit/infer", {**body, "outputs": [{"name": "probabilities"}]})
    assert [o["name"] for o in only.json()["outputs"]] == ["probabilities"]


def test_v2_infer_one_numeric_tensor(env):
    c = env["client"]
    model, schema, X = env["diamonds"]
    rows = X.head(3)[schema.feature_names]
    body = {"inputs": [{"name": "input-0", "shape": [3, len(schema.feature_names)],
                        "datatype": "FP32", "data": rows.to_numpy().tolist()}]}
    r = post(c, "/diamonds/v2/models/diamonds/infer", body)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["name"] == "predictions" and out["shape"] == [3]
    np.testing.assert_allclose(out["data"], model.predict_frame(rows).values, rtol=1e-5)
    flat = {"inputs": [{**body["inputs"][0], "data": rows.to_numpy().reshape(-1).tolist()}]}
    assert post(c, "/diamonds/v2/models/diamonds/infer", flat).json()["outputs"][0] == out


def test_mlflow_invocations_all_formats(env):
    c = env["client"]
    model, schema, X = env["credit"]
    rows = _records(X.head(3))
    want = [schema.class_labels[i] for i in model.predict_frame(pd.DataFrame(rows)).labels]
    cols = schema.feature_names
    bodies = [
        {"dataframe_split": {"columns": cols, "data": [[r[k] for k in cols] for r in rows]}},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": {k: [r[k] for r in rows] for k in cols}},
        {"inputs": rows},
    ]
    for body in bodies:
        r = post(c, "/invocations", body)
        assert r.status_code == 200, (body, r.text)
        assert r.json()["predictions"] == want and len(r.json()["prediction_ids"]) == 3
    csv = pd.DataFrame(rows).to_csv(index=False).encode()
    r = post(c, "/invocations", csv, "text/csv")
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == want and len(r.json()["prediction_ids"]) == 3


def test_mlflow_invocations_regression(env):
    model, _, X = env["diamonds"]
    rows = X.head(2)
    r = post(env["client"], "/diamonds/invocations", {"dataframe_records": _records(rows)})
    np.testing.assert_allclose(r.json()["predictions"], model.predict_frame(rows).values,
                               rtol=1e-5)


# ---------------------------------------------------------------- bad input


def _good(env) -> dict:
    return _records(env["credit"][2].head(1))[0]


def _with(env, **changes) -> dict:
    rec = _good(env)
    for k, v in changes.items():
        if v is _DROP:
            rec.pop(k)
        else:
            rec[k] = v
    return rec


_DROP = object()


def bad_cases(env):
    """(name, path, body bytes, content type, status, substring of the message, field)."""
    rec = _good(env)
    j = lambda o: json.dumps(o).encode()  # noqa: E731
    many = {"records": [rec] * 2001}
    return [
        ("missing column", "/predict", j({"records": [_with(env, Age=_DROP)]}), None, 400,
         "missing column(s) ['Age']", "Age"),
        ("unknown column", "/predict", j({"records": [_with(env, Shoe=3)]}), None, 400,
         "unknown column(s) ['Shoe']", "Shoe"),
        ("string for number", "/predict", j({"records": [_with(env, Age="abc")]}), None, 400,
         "column 'Age': expected a number or null, got a string 'abc'", "Age"),
        ("numeric string", "/predict", j({"records": [_with(env, Age="30")]}), None, 400,
         "expected a number or null", "Age"),
        ("wrong type category", "/predict", j({"records": [_with(env, Home=[1.5])]}), None, 400,
         "column 'Home': expected a string", "Home"),
        ("object for number", "/predict", j({"records": [_with(env, Age={"a": 1})]}), None, 400,
         "expected a number or null", "Age"),
        ("NaN", "/predict", b'{"records": [' + j(rec)[:-1] + b', "Age": NaN}]}', None, 400,
         "expected a finite number or null, got nan", "Age"),
        ("Infinity", "/predict", j({"records": [_with(env, Age=float("inf"))]}), None, 400,
         "expected a finite number", "Age"),
        ("over float32", "/predict", j({"records": [_with(env, Age=1e300)]}), None, 400,
         "finite number", "Age"),
        ("empty batch", "/predict", j({"records": []}), None, 400, "empty batch", "records"),
        ("empty columns data", "/predict", j({"columns": list(rec), "data": []}), None, 400,
         "empty batch", "data"),
        ("over row limit", "/predict", j(many), None, 400, "over the limit of 2000 rows",
         "records"),
        ("malformed JSON", "/predict", b'{"records": [', None, 400, "malformed JSON", "body"),
        ("empty body", "/predict", b"", None, 400, "empty body", "body"),
        ("not an object", "/predict", j([1, 2]), None, 400, "expected a JSON object", "body"),
        ("no records key", "/predict", j({"rows": []}), None, 400, '"records"', "records"),
        ("row not a list", "/predict", j({"columns": list(rec), "data": [rec]}), None, 400,
         "data[0]: expected a list", "data[0]"),
        ("short row", "/predict", j({"columns": list(rec), "data": [[1]]}), None, 400,
         "data[0]", "data[0]"),
        ("wrong content type", "/predict", j({"records": [rec]}), "text/plain", 415,
         "expected application/json", "Content-Type"),
        ("xml", "/predict", b"<a/>", "application/xml", 415, "not supported", "Content-Type"),
        ("body too large", "/predict", b'{"records": [' + b" " * 1_100_000 + b"]}", None, 413,
         "over the limit of 1000000 bytes", "body"),
        ("mlflow none of the keys", "/invocations", j({"rows": []}), None, 400,
         "expected exactly one of", "body"),
        ("mlflow two keys", "/invocations", j({"instances": [rec], "inputs": [rec]}), None, 400,
         "expected exactly one of", "body"),
        ("mlflow content type", "/invocations", j({"instances": [rec]}), "text/plain", 415,
         "application/json or text/csv", "Content-Type"),
        ("csv bad number", "/invocations", b"Age,Home\nabc,rent\n", "text/csv", 400,
         "column 'Age': expected a number", "Age"),
        ("v2 no inputs", "/v2/models/credit/infer", j({"inputs": []}), None, 400,
         "inputs: expected a non-empty list", "inputs"),
        ("v2 bad shape", "/v2/models/credit/infer", j({"inputs": [
            {"name": "Age", "shape": [3], "datatype": "FP32", "data": [1]}]}), None, 400,
         "shape [3] needs 3 values", "Age"),
        ("v2 missing column", "/v2/models/credit/infer", j({"inputs": [
            {"name": "Age", "shape": [1], "datatype": "FP32", "data": [1]}]}), None, 400,
         "missing column(s)", "Seniority"),
        ("v2 bytes for number", "/v2/models/credit/infer", j({"inputs": [
            {"name": c, "shape": [1], "datatype": "BYTES", "data": [str(v)]}
            for c, v in rec.items()]}), None, 400, "expected a numeric datatype", "Seniority"),
        ("v2 bad datatype", "/v2/models/credit/infer", j({"inputs": [
            {"name": "Age", "shape": [1], "datatype": "FLOAT", "data": [1]}]}), None, 400,
         "datatype 'FLOAT' is not one of", "Age"),
        ("v2 matrix with categoricals", "/v2/models/credit/infer", j({"inputs": [
            {"name": "x", "shape": [1, 13], "datatype": "FP32", "data": [0] * 13}]}), None, 400,
         "categorical columns", "x"),
        ("v2 unknown output", "/v2/models/credit/infer", j({"inputs": [
            {"name": c, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64",
             "data": [v]} for c, v in rec.items()], "outputs": [{"name": "logits"}]}), None,
         400, "unknown output(s) ['logits']", "outputs"),
        ("v2 binary data param", "/v2/models/credit/infer", j({"inputs": [
            {"name": "Age", "shape": [1], "datatype": "FP32", "data": [],
             "parameters": {"binary_data_size": 4}}]}), None, 400, "binary_data=False",
         "inputs[0].parameters.binary_data_size"),
    ]


def test_bad_inputs_are_4xx_json_naming_the_field(env):
    c = env["client"]
    failures = []
    for name, path, body, ctype, status, text, field in bad_cases(env):
        r = post(c, path, body, ctype or "application/json")
        try:
            payload = r.json()
        except ValueError:
            failures.append(f"{name}: not JSON: {r.status_code} {r.text[:200]}")
            continue
        message = payload.get("error") or payload.get("message") or ""
        if r.status_code != status or text not in message or payload.get("field") != field:
            failures.append(f"{name}: {r.status_code} {payload}")
        if path == "/invocations" and "error_code" not in payload:
            failures.append(f"{name}: MLflow errors carry error_code: {payload}")
    assert not failures, "\n".join(failures)
    # the replica survived all of it
    assert c.get("/healthz").status_code == 200


def test_triton_binary_extension_is_answered_400(env):
    r = post(env["client"], "/v2/models/credit/infer", b"\x00\x01binary",
             "application/octet-stream", **{"Inference-Header-Content-Length": "20"})
    assert r.status_code == 400
    assert "binary_data=False" in r.json()["error"]


def test_unknown_route_and_method_are_json(env):
    c = env["client"]
    r = c.get("/nope")
    assert r.status_code == 404 and r.json()["reason"] == "not_found"
    r = c.get("/predict")
    assert r.status_code == 405 and "error" in r.json()


def test_a_form_or_missing_content_type_is_415(env):
    # what a web page can send without a CORS preflight (and `curl -d` without -H) is refused
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):
        r = post(env["client"], "/predict", {"records": [_good(env)]}, content_type)
        assert r.status_code == 415, r.text
        assert r.json()["reason"] == "unsupported_media_type"
    r = env["client"].post("/invocations", content=json.dumps({"instances": [_good(env)]}))
    assert r.status_code == 415 and r.json()["error_code"] == "UNSUPPORTED_MEDIA_TYPE"


def test_crafted_bodies_leave_health_checks_answering(env):
    """Bodies that held a replica's event loop for seconds (40,000 duplicate column names took
    35 s; 2 MB of empty rows 1.5 s), sent back to back from two clients while /healthz is
    polled: each is a 4xx, and every health check answers promptly."""
    crafted = [
        ("/predict", json.dumps({"columns": ["Age"] * 40_000, "data": []}).encode(),
         "application/json"),
        ("/invocations", b'{"dataframe_split": {"columns": [], "data": [' + b"[]," * 700_000
         + b"[]]}}", "application/json"),
        ("/invocations", ",".join(["Age"] * 40_000).encode() + b"\n", "text/csv"),
        ("/v2/models/credit/infer", json.dumps({"inputs": [{
            "name": "Age", "datatype": "FP32", "shape": [2**64 - 1] * 20_000, "data": [1]}]}
        ).encode(), "application/json"),
    ]
    stop, statuses = threading.Event(), []

    def hammer() -> None:
        with httpx.Client(base_url=env["client"].base_url, timeout=120) as client:
            while not stop.is_set():
                for path, body, content_type in crafted:
                    statuses.append(post(client, path, body, content_type).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for t in threads:
        t.start()
    health = []
    try:
        time.sleep(0.5)
        for _ in range(20):
            started = time.monotonic()
            r = env["client"].get("/healthz")
            health.append((r.status_code, time.monotonic() - started))
            time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and all(400 <= s < 500 for s in statuses), sorted(set(statuses))
    assert all(code == 200 for code, _ in health), health
    assert max(seconds for _, seconds in health) < 5, health


# ---------------------------------------------------------------- prediction log


def test_prediction_log_writes_parquet(env):
    c = env["client"]
    _, schema, X = env["credit"]
    rows = _records(X.head(7))
    for _ in range(3):
        assert post(c, "/predict", {"records": rows}).status_code == 200
    deadline = time.monotonic() + 20
    files = []
    while time.monotonic() < deadline:
        files = sorted(env["log_dir"].glob("predictions-*.parquet"))
        total = sum(pq.read_metadata(f).num_rows for f in files)
        if total >= 21:
            break
        time.sleep(0.5)
    assert files, "no prediction log files written"
    table = pq.read_table(files[-1]).flatten()
    names = set(table.column_names)
    assert {"timestamp", "model_name", "model_version", "prediction", "probabilities"} <= names
    assert {f"input.{c}" for c in schema.feature_names} <= names
    df = table.to_pandas()
    assert set(df["model_version"]) == {"1"} and set(df["prediction"]) <= set(schema.class_labels)
    assert str(df["timestamp"].dt.tz) == "UTC"
