"""Fast checks (no Ray) of request parsing, warm-up and the prediction log's rotation and cap."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from raylane.model.column_values import numeric_column
from raylane.model.feeds import RequestError
from raylane.model.onnx_model import Prediction
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.serving import fastpath
from raylane.serving.limits import decode_json
from raylane.serving.prediction_log import PredictionLog
from raylane.serving.protocols import mlflow_scoring as scoring
from raylane.serving.protocols import native, v2
from raylane.serving.settings import ServingSettings

SCHEMA = FeatureSchema(
    task="classification", target="y", class_labels=["bad", "good"],
    columns=[ColumnSpec(name="age", kind="numeric", dtype="int64"),
             ColumnSpec(name="home", kind="categorical", dtype="object",
                        categories=["own", "rent"])],
)


def test_records_and_split_give_the_same_feeds():
    a, n = native.parse_predict({"records": [{"age": 30, "home": "rent"},
                                                {"age": None, "home": None}]}, SCHEMA, 10)
    b, _ = native.parse_predict({"columns": ["home", "age"],
                                    "data": [["rent", 30], [None, None]]}, SCHEMA, 10)
    assert n == 2
    for k in a:
        assert a[k].shape == (2, 1)
    np.testing.assert_array_equal(a["age"], b["age"])
    assert a["age"].dtype == np.float32 and np.isnan(a["age"][1, 0])
    assert a["home"].tolist() == [["rent"], [""]] == b["home"].tolist()


@pytest.mark.parametrize("values,fragment", [
    (["1.5"], "got a string '1.5'"), ([float("nan")], "finite"), ([1e39], "finite"),
    ([[1]], "got a list"), ([{}], "got a dict"),
])
def test_numeric_column_rejects(values, fragment):
    with pytest.raises(RequestError) as err:
        numeric_column("age", values, 1)
    assert fragment in err.value.message and err.value.field == "age"


def test_numeric_column_accepts_ints_bools_floats_and_null():
    out = numeric_column("age", [1, True, 2.5, None], 4)
    assert out.shape == (4, 1) and np.isnan(out[3, 0]) and out[1, 0] == 1.0


def test_nan_literal_parses_then_is_rejected_per_column():
    obj = decode_json(b'{"records": [{"age": NaN, "home": "own"}]}')
    with pytest.raises(RequestError, match="column 'age': expected a finite number"):
        native.parse_predict(obj, SCHEMA, 10)


def test_v2_per_column_and_invocations_columnar():
    body = {"inputs": [{"name": "age", "datatype": "INT64", "shape": [2], "data": [1, 2]},
                       {"name": "home", "datatype": "BYTES", "shape": [2, 1],
                        "data": [["own"], ["rent"]]}]}
    feeds, n = v2.parse_v2(body, SCHEMA, 10)
    assert n == 2 and feeds["home"].tolist() == [["own"], ["rent"]]
    feeds2, _ = scoring.parse_invocations({"inputs": {"age": [1, 2], "home": ["own", "rent"]}},
                                          SCHEMA, 10)
    np.testing.assert_array_equal(feeds["age"], feeds2["age"])


def test_settings_defaults_match_serve_config():
    import yaml
    from support.serving import ROOT

    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    (app,) = cfg["applications"]
    assert app["import_path"] == "raylane.serving.app:app"
    (dep,) = app["deployments"]
    settings = ServingSettings.model_validate(dep["user_config"])
    assert settings.model_uri == "models:/credit@champion"
    auto = dep["autoscaling_config"]
    assert auto["min_replicas"] <= auto["max_replicas"]
    assert dep["max_ongoing_requests"] >= settings.batching.max_batch_size
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(cfg)


def test_prediction_log_rotates_and_caps(tmp_path):
    plog = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=10**9,
                         flush_interval_s=3600, max_total_bytes=6000, seed=0)
    feeds, n = native.parse_predict(
        {"records": [{"age": i, "home": "own"} for i in range(50)]}, SCHEMA, 100)
    pred = Prediction(labels=np.zeros(n, dtype=np.int64),
                      probabilities=np.tile(np.array([[0.7, 0.3]], np.float32), (n, 1)))
    for _ in range(12):
        plog.record("credit", "3", SCHEMA, feeds, n, pred)
        plog.flush()
    files = sorted(tmp_path.glob("predictions-*.parquet"))
    assert 1 <= len(files) < 12  # rotated: one file per flush, the oldest deleted over the cap
    assert sum(f.stat().st_size for f in files) <= 6000
    table = pq.read_table(files[-1]).flatten()
    assert table.num_rows == 50
    assert table.column("input.age").to_pylist()[:3] == [0.0, 1.0, 2.0]
    assert set(table.column("model_version").to_pylist()) == {"3"}

    sampled = PredictionLog(directory=str(tmp_path / "s"), sample_rate=0.1, flush_rows=10**9,
                            seed=1)
    for _ in range(20):
        sampled.record("credit", "3", SCHEMA, feeds, n, pred)
    (f,) = sampled.flush()
    assert 50 < pq.read_metadata(f).num_rows < 150  # ~10% of 1,000 rows


def test_route_path_is_relative_to_root_path():
    assert fastpath.route_path({"path": "/predict"}) == "/predict"
    assert fastpath.route_path({"path": "/dia/predict", "root_path": "/dia"}) == "/predict"
    assert fastpath.route_path({"path": "/diamonds", "root_path": "/dia"}) == "/diamonds"
    assert fastpath.route_path({"path": "/dia", "root_path": "/dia"}) == ""


def test_fast_path_serves_claimed_posts_and_leaves_the_rest_to_fastapi():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from starlette.responses import Response

    api = FastAPI()
    api.add_middleware(fastpath.PredictionFastPath)

    @api.post("/predict")
    async def slow() -> dict:
        return {"via": "fastapi"}

    class Routes:
        def fast_route(self, path):
            async def fast(request):
                return Response(b'{"via": "fast", "body": ' + await request.body() + b"}",
                                media_type="application/json")
            return fast if path == "/predict" else None

    client = TestClient(api)
    assert client.post("/predict", content=b"1").json() == {"via": "fastapi"}  # not bound yet
    fastpath.bind(api, Routes())
    assert client.post("/predict", content=b"1").json() == {"via": "fast", "body": 1}
    assert client.get("/predict").status_code == 405  # other methods: FastAPI
    assert client.post("/other").status_code == 404


def test_micro_batcher_coalesces_concurrent_items_and_propagates_errors():
    import asyncio

    from raylane.serving.batcher import MicroBatcher

    calls: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        calls.append(items)
        if -1 in items:
            raise ValueError("bad item")
        return [2 * i for i in items]

    async def main():
        b = MicroBatcher(double, max_batch_size=3)
        out = await asyncio.gather(*(b.submit(i) for i in range(5)))
        assert out == [0, 2, 4, 6, 8] and calls == [[0, 1, 2], [3, 4]]
        assert await b.submit(7) == 14
        with pytest.raises(ValueError, match="bad item"):
            await asyncio.gather(b.submit(1), b.submit(-1))
        b.set_batch_wait_timeout_s(0.01)
        b.set_max_batch_size(16)
        assert await asyncio.gather(b.submit(1), b.submit(2)) == [2, 4]

    asyncio.run(main())
