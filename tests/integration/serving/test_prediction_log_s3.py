"""The prediction log on a real S3-compatible server (moto in server mode, a subprocess).

The Serve test runs two replicas of the credit model on real Ray Serve, their log location taken
from ``$RAYLANE_PREDICTION_LOG`` (as the KubeRay manifests set it) and the endpoint from
``$AWS_ENDPOINT_URL``; every protocol answers over HTTP, and the ids the clients got must be
exactly the ids logged in the bucket, each with its row's prediction.
"""

from __future__ import annotations

import io
import math
import time

import httpx
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from mlflow.deployments import PredictionsResponse
from support import serving as ss
from support.s3 import KEYS, moto_server

from raylane.model.onnx_model import OnnxModel
from raylane.serving.prediction_log import PredictionLog
from raylane.serving.protocols import native

pytestmark = pytest.mark.slow

BUCKET = "raylane-logs"
@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free port with an empty bucket; yields its environment."""
    with moto_server(tmp_path_factory.mktemp("moto"), BUCKET) as (endpoint, fs):
        yield {**KEYS, "AWS_ENDPOINT_URL": endpoint}, fs


def objects(fs: pafs.FileSystem, prefix: str) -> list[pafs.FileInfo]:
    sel = pafs.FileSelector(f"{BUCKET}/{prefix}", allow_not_found=True, recursive=True)
    return [i for i in fs.get_file_info(sel) if i.type == pafs.FileType.File]


def read_log(fs: pafs.FileSystem, prefix: str) -> pd.DataFrame:
    tables = [pq.read_table(i.path, filesystem=fs).flatten().to_pandas()
              for i in objects(fs, prefix) if i.path.endswith(".parquet")]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]


def test_log_writes_and_caps_on_s3(s3, monkeypatch):
    """Direct: one PUT per file (no .tmp object ever), the cap applied to the bucket listing."""
    env, fs = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    trained = ss.train("credit", n_estimators=5)
    model = OnnxModel(trained.onnx_bytes, trained.schema)
    rows = trained.X.head(50)
    feeds, _ = native.parse_predict({"records": records(rows)}, trained.schema, 1000)
    pred = model.run(feeds)
    log = PredictionLog(directory=f"s3://{BUCKET}/direct", sample_rate=1.0, flush_rows=10**6,
                        max_total_bytes=10**9, seed=0)
    sizes = []
    for i in range(4):
        log.record("credit", "1", trained.schema, feeds, len(rows), pred,
                   [f"r{i}-{k}" for k in range(len(rows))])
        (path,) = log.flush()
        assert path.startswith(f"{BUCKET}/direct/predictions-") and path.endswith(".parquet")
        sizes.append(fs.get_file_info(path).size)
    infos = objects(fs, "direct")
    assert len(infos) == 4 and not [i for i in infos if not i.path.endswith(".parquet")]
    assert read_log(fs, "direct")["prediction_id"].tolist() == [
        f"r{i}-{k}" for i in range(4) for k in range(len(rows))]
    # a cap of about two files: the next flush deletes the oldest ones in the bucket
    log.max_total_bytes = sizes[-1] * 2 + sizes[-1] // 2
    log.record("credit", "1", trained.schema, feeds, len(rows), pred, ["last"] * len(rows))
    log.flush()
    left = objects(fs, "direct")
    assert sum(i.size for i in left) <= log.max_total_bytes and len(left) == 2
    assert set(read_log(fs, "direct")["prediction_id"].str[:2]) == {"r3", "la"}
    # a bucket that does not exist: writes fail, are counted, never raise
    missing = PredictionLog(directory="s3://no-such-bucket/x", sample_rate=1.0, seed=0)
    missing.record("credit", "1", trained.schema, feeds, len(rows), pred)
    assert missing.flush() == [] and missing.dropped_rows == len(rows)


def test_the_age_limit_deletes_only_this_deployments_old_objects(s3, monkeypatch):
    """Two deployments log to one bucket prefix: the age limit of one deletes its own objects
    once they are older than the limit (by the listing's LastModified), never the other's."""
    env, fs = s3
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    trained = ss.train("credit", n_estimators=5)
    model = OnnxModel(trained.onnx_bytes, trained.schema)
    rows = trained.X.head(10)
    feeds, _ = native.parse_predict({"records": records(rows)}, trained.schema, 1000)
    pred = model.run(feeds)
    where = f"s3://{BUCKET}/aged"
    day = 86400
    mine = PredictionLog(directory=where, sample_rate=1.0, flush_rows=10**6, seed=0,
                         prefix="credit", max_age_s=day)
    theirs = PredictionLog(directory=where, sample_rate=1.0, flush_rows=10**6, seed=1,
                           prefix="credit-canary")
    written = {}
    for log in (mine, theirs):
        log.record("credit", "1", trained.schema, feeds, len(rows), pred)
        (written[log.prefix],) = log.flush()
    assert len(objects(fs, "aged")) == 2
    assert mine.prune() == []  # minutes old: kept
    assert mine.prune(now=time.time() + 2 * day) == [written["credit"]]
    assert [i.path for i in objects(fs, "aged")] == [written["credit-canary"]]


def test_served_ids_equal_logged_ids_in_every_protocol(s3, tmp_path):
    env, fs = s3
    uri = ss.tracking_uri_for(tmp_path)
    trained = ss.train("credit")
    ss.publish_trained(uri, "credit", trained)
    schema = trained.schema
    replica_env = {**env, "RAYLANE_PREDICTION_LOG": f"s3://{BUCKET}/served",
                   "PYTHONPATH": str(ss.ROOT)}
    cfg = ss.settings(uri, "models:/credit@champion", prediction_log={
        "enabled": True, "directory": None, "sample_rate": 1.0, "flush_rows": 10**6,
        "flush_interval_s": 1.0})
    returned: dict[str, str] = {}  # id -> predicted label, as the clients saw them
    with ss.ray_serve() as base:
        ss.deploy("credit", cfg, num_replicas=2, ray_actor_options={
            "num_cpus": 0.5, "runtime_env": {"env_vars": replica_env}})
        with httpx.Client(base_url=base, timeout=30) as c:

            def post(path, body, ctype="application/json"):
                data = body if isinstance(body, bytes) else None
                r = c.post(path, content=data, json=None if data else body,
                           headers={"content-type": ctype})
                assert r.status_code == 200, r.text
                return r

            for i in range(6):
                rows = records(trained.X.iloc[5 * i: 5 * i + 5])
                out = post("/predict", {"records": rows}).json()
                returned.update(zip(out["prediction_ids"], out["predictions"], strict=True))
                inputs = [{"name": col.name, "shape": [len(rows)],
                           "datatype": "FP64" if col.kind == "numeric" else "BYTES",
                           "data": [r[col.name] for r in rows]} for col in schema.columns]
                out = post("/v2/models/credit/infer", {"inputs": inputs}).json()
                labels = {o["name"]: o["data"] for o in out["outputs"]}["label"]
                ids = out["parameters"]["prediction_ids"].split(",")
                returned.update(zip(ids, labels, strict=True))
                cols = schema.feature_names
                split = {"columns": cols, "data": [[r[k] for k in cols] for r in rows]}
                r = post("/invocations", {"dataframe_split": split})
                parsed = PredictionsResponse.from_json(r.text)  # MLflow's client takes it
                assert parsed.get_predictions()[0].tolist() == r.json()["predictions"]
                returned.update(zip(r.json()["prediction_ids"], r.json()["predictions"],
                                    strict=True))
                buf = io.StringIO()
                pd.DataFrame(rows).to_csv(buf, index=False)
                out = post("/invocations", buf.getvalue().encode(), "text/csv").json()
                returned.update(zip(out["prediction_ids"], out["predictions"], strict=True))
        assert len(returned) == 6 * 4 * 5  # every id is new
        deadline = time.monotonic() + 90
        logged = pd.DataFrame()
        while time.monotonic() < deadline:  # the replicas flush every second
            logged = read_log(fs, "served")
            if len(logged) >= len(returned):
                break
            time.sleep(1)
    assert len(logged) == len(returned), "rows missing from the log"
    assert dict(zip(logged["prediction_id"], logged["prediction"], strict=True)) == returned
    assert set(logged["model_version"]) == {"1"}
    names = [i.base_name for i in objects(fs, "served")]
    assert all(n.startswith("predictions-") and n.endswith(".parquet") for n in names)
    print(f"{len(logged)} rows in {len(names)} objects from "
          f"{len({n.split('-')[2] for n in names})} replica(s)")
