"""Integer-coded categories with missing values (issue 9, defect 7), end to end at unit scale.

A categorical column of integer codes with a missing value is a float column in pandas: its
values are 1.0, 2.0, NaN. Training, the parity check and every serving route must read a
client's 1, 1.0, "1" and "1.0" as that same category. Real training, export and app; no Ray.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.linear_model import LogisticRegression

from raylane.data.read import encode_target, infer_schema, prepare_features, split_data
from raylane.model.onnx_model import OnnxModel
from raylane.model.preprocessing import build_pipeline, build_preprocessor
from raylane.model.schema import FeatureSchema
from raylane.model.store import RegisteredModel
from raylane.release.export import check_parity, to_onnx
from raylane.serving.api import bind, build_api
from raylane.serving.dataplane import DataPlane
from raylane.serving.predictor import LoadedModel, ModelHolder
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.telemetry import ServingTelemetry


def table() -> pd.DataFrame:
    """``grade`` (codes 1-3, some missing) decides ``y``; ``x`` is noise."""
    rng = np.random.default_rng(0)
    grade = np.tile([1.0, 2.0, 3.0, np.nan], 40)
    y = np.where(np.isin(grade, [1.0, 3.0]), "yes", "no")
    flip = rng.random(len(y)) < 0.1
    y[flip] = np.where(y[flip] == "yes", "no", "yes")
    return pd.DataFrame({"x": rng.normal(size=len(y)), "grade": grade, "y": y})


def fit(frame: pd.DataFrame, schema: FeatureSchema, features: pd.DataFrame):
    pipeline = build_pipeline(build_preprocessor(schema, scale_numeric=True),
                              LogisticRegression(max_iter=500))
    return pipeline.fit(features, encode_target(frame["y"], schema))


def serve(schema: FeatureSchema, onnx_bytes: bytes) -> TestClient:
    reg = RegisteredModel(name="grades", version="1", alias="champion", run_id="run",
                          onnx_bytes=onnx_bytes, schema=schema, metadata={})
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    plane.holder.current = LoadedModel(registered=reg, onnx=OnnxModel(onnx_bytes, schema),
                                       uri="models:/grades@champion")
    api = build_api(PROTOCOLS)
    bind(api, plane, PROTOCOLS)
    return TestClient(api)


@pytest.fixture(scope="module")
def trained():
    frame = table()
    schema = infer_schema(frame, "y", None, categorical=["grade"])
    pipeline = fit(frame, schema, prepare_features(frame, schema))
    return frame, schema, pipeline, to_onnx(pipeline, schema)


def probabilities(client: TestClient, grade, x: float = 0.25) -> list[float]:
    r = client.post("/predict", content=json.dumps({"records": [{"x": x, "grade": grade}]}),
                    headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()["probabilities"][0]


def test_training_records_integer_codes_as_integers(trained):
    frame, schema, _, _ = trained
    grade = schema.column("grade")
    assert grade.categories == ["1", "2", "3"] and grade.nullable
    assert set(prepare_features(frame, schema)["grade"]) == {"1", "2", "3", ""}


def test_every_spelling_of_a_code_is_that_category_on_every_route(trained):
    _, schema, pipeline, onnx_bytes = trained
    native = pipeline.predict_proba(
        prepare_features(pd.DataFrame({"x": [0.25], "grade": [1.0]}), schema))[0]
    with serve(schema, onnx_bytes) as client:
        spellings = [probabilities(client, g) for g in (1, 1.0, "1", "1.0", "01")]
        for p in spellings:
            np.testing.assert_allclose(p, native, rtol=1e-5, atol=1e-6)
        unseen = probabilities(client, 7)
        assert abs(unseen[1] - native[1]) > 0.05  # an unseen code is not the known one
        assert abs(probabilities(client, 2)[1] - native[1]) > 0.05
        for csv in (b"x,grade\n0.25,1\n", b"x,grade\n0.25,1.0\n"):
            r = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"] == [schema.class_labels[int(np.argmax(native))]]
        for data in ([1], ["1.0"]):
            body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [0.25]},
                               {"name": "grade", "datatype": "BYTES", "shape": [1],
                                "data": data}]}
            r = client.post("/v2/models/grades/infer", json=body)
            assert r.status_code == 200, r.text
            probs = {o["name"]: o for o in r.json()["outputs"]}["probabilities"]["data"]
            np.testing.assert_allclose(probs, native, rtol=1e-5, atol=1e-6)


def test_parity_feeds_the_graph_as_serving_reads_clients(trained):
    frame, schema, pipeline, onnx_bytes = trained
    data = split_data(frame, schema, 0.2, 0.2, seed=0)
    raw = frame.loc[data.holdout.X.index, schema.feature_names]
    report = check_parity(pipeline, OnnxModel(onnx_bytes, schema), data.holdout.X, raw=raw)
    assert report.passed and report.mismatched_rows == 0

    # Trained on str(1.0) = "1.0" (the old conversion) while serving reads a client's 1.0 as
    # "1": the graph sees unseen categories, and parity says so.
    old = prepare_features(frame, schema).assign(
        grade=[("" if pd.isna(v) else str(v)) for v in frame["grade"]])
    stale = fit(frame, schema, old)
    stale_onnx = OnnxModel(to_onnx(stale, schema), schema)
    hold = old.loc[data.holdout.X.index]
    assert not check_parity(stale, stale_onnx, hold, raw=raw).passed
    assert not check_parity(stale, stale_onnx, hold).passed  # "1.0" as a client string, too


def test_a_model_that_recorded_codes_as_floats_still_matches(trained):
    """Models trained before the fix recorded "1.0", "2.0": serving maps 1 / "1" to them."""
    frame, schema, _, _ = trained
    old = prepare_features(frame, schema).assign(
        grade=[("" if pd.isna(v) else str(v)) for v in frame["grade"]])
    legacy_schema = schema.model_copy(deep=True)
    legacy_schema.column("grade").categories = ["1.0", "2.0", "3.0"]
    pipeline = fit(frame, legacy_schema, old)
    native = pipeline.predict_proba(old.head(1).assign(x=0.25, grade="1.0"))[0]
    onnx_bytes = to_onnx(pipeline, legacy_schema)
    with serve(legacy_schema, onnx_bytes) as client:
        for g in (1, 1.0, "1", "1.0"):
            np.testing.assert_allclose(probabilities(client, g), native, rtol=1e-5, atol=1e-6)
    # and so does a champion comparison, which feeds today's holdout ("1") to the old graph
    rows = pd.DataFrame({"x": [0.25], "grade": ["1"]})
    proba = OnnxModel(onnx_bytes, legacy_schema).predict_frame(rows).probabilities[0]
    np.testing.assert_allclose(proba, native, rtol=1e-5, atol=1e-6)
