"""Prediction ids and the prediction log's writer: real files, a real in-process app, no Ray."""

from __future__ import annotations

import json
import time
import uuid

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from tiny_serving_model import loaded

from raylane.serving.api import bind, build_api
from raylane.serving.dataplane import DataPlane
from raylane.serving.holder import ModelHolder
from raylane.serving.prediction_ids import new_prediction_ids
from raylane.serving.prediction_log import PredictionLog, is_object_store, resolve_location
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry

ROWS = [{"age": 30.0 + i, "income": 50.0 + i, "home": "rent" if i % 2 else "own"}
        for i in range(6)]
COLS = ["age", "income", "home"]


@pytest.mark.parametrize("n", [0, 1, 7, 8, 1000])
def test_ids_are_unique_uuid7_in_time_order(n):
    before = time.time_ns() // 1_000_000
    ids = new_prediction_ids(n)
    after = time.time_ns() // 1_000_000
    assert len(ids) == n == len(set(ids))
    for i in ids:
        u = uuid.UUID(hex=i)
        assert len(i) == 32 and u.hex == i and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= int(i[:12], 16) <= after  # the first 48 bits: Unix time in ms
    time.sleep(0.002)
    if n:
        assert max(ids) < min(new_prediction_ids(n))  # later ids sort after


def test_random_bits_differ_between_rows():
    ids = new_prediction_ids(2000)
    assert len({i[13:] for i in ids}) == 2000  # not only unique because of the timestamp


@pytest.fixture(scope="module")
def model():
    return loaded("1")


def app_with_log(model, directory, sample_rate=1.0):
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    plane.configure(ServingSettings.model_validate({"prediction_log": {
        "enabled": True, "directory": str(directory), "sample_rate": sample_rate,
        "flush_rows": 10**6, "flush_interval_s": 3600}}))
    plane.holder.current = model
    api = build_api(PROTOCOLS)
    bind(api, plane, PROTOCOLS)
    return plane, api


def post(client, path, body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = client.post(path, content=data, headers={"content-type": content_type})
    assert r.status_code == 200, r.text
    return r.json()


def ids_of_every_protocol(client) -> list[tuple[list[str], list[str]]]:
    """(ids, predicted labels) of one request per protocol and body form."""
    split = {"columns": COLS, "data": [[r[c] for c in COLS] for r in ROWS]}
    out = []
    native = post(client, "/predict", {"records": ROWS})
    out.append((native["prediction_ids"], native["predictions"]))
    native = post(client, "/predict", split)
    out.append((native["prediction_ids"], native["predictions"]))
    inputs = [{"name": c, "datatype": "BYTES" if c == "home" else "FP64", "shape": [len(ROWS)],
               "data": [r[c] for r in ROWS]} for c in COLS]
    v2 = post(client, "/v2/models/credit/infer", {"inputs": inputs,
                                                   "outputs": [{"name": "label"}]})
    out.append((v2["parameters"]["prediction_ids"].split(","), v2["outputs"][0]["data"]))
    mlflow = post(client, "/invocations", {"dataframe_split": split})
    out.append((mlflow["prediction_ids"], mlflow["predictions"]))
    csv = ("age,income,home\n" + "".join(f"{r['age']},{r['income']},{r['home']}\n"
                                        for r in ROWS)).encode()
    mlflow = post(client, "/invocations", csv, "text/csv")
    out.append((mlflow["prediction_ids"], mlflow["predictions"]))
    return out


def test_every_protocol_returns_the_ids_the_log_records(model, tmp_path):
    plane, api = app_with_log(model, tmp_path / "log")
    with TestClient(api) as client:
        answers = ids_of_every_protocol(client)
    files = plane.plog.flush()
    assert len(files) == 1
    logged = pq.read_table(files[0]).flatten().to_pandas()
    returned = [i for ids, _ in answers for i in ids]
    assert all(len(ids) == len(ROWS) for ids, _ in answers)
    assert len(set(returned)) == len(returned) == 5 * len(ROWS)
    assert logged["prediction_id"].tolist() == returned  # every row, its id, in order
    by_id = logged.set_index("prediction_id")
    for ids, labels in answers:
        assert by_id.loc[ids, "prediction"].tolist() == labels
        assert by_id.loc[ids, "input.age"].tolist() == [r["age"] for r in ROWS]
        assert by_id.loc[ids, "input.home"].tolist() == [r["home"] for r in ROWS]
    assert plane.plog.dropped_rows == 0


def test_sampled_rows_keep_their_own_ids(model, tmp_path):
    plane, api = app_with_log(model, tmp_path / "log", sample_rate=0.5)
    plane.plog._rng = np.random.default_rng(0)
    rows = [{"age": float(i), "income": 2.0 * i, "home": "own"} for i in range(200)]
    with TestClient(api) as client:
        r = post(client, "/predict", {"records": rows})
    (f,) = plane.plog.flush()
    logged = pq.read_table(f).flatten().to_pandas()
    assert 50 < len(logged) < 150
    position = {i: k for k, i in enumerate(r["prediction_ids"])}
    for pid, age in zip(logged["prediction_id"], logged["input.age"], strict=True):
        assert rows[position[pid]]["age"] == age  # the row logged under an id is that row


def test_an_fsspec_location_and_two_replicas_sharing_it():
    fs = fsspec.filesystem("memory")
    root = f"plog-{uuid.uuid4().hex}/predictions"
    where = f"memory://{root}"
    a = PredictionLog(directory=where, sample_rate=1.0, flush_rows=10**6, seed=0,
                      max_total_bytes=10**9)
    b = PredictionLog(directory=where, sample_rate=1.0, flush_rows=10**6, seed=1,
                      max_total_bytes=10**9)
    assert not is_object_store(a.filesystem)
    m = loaded("1")
    feeds = {"age": np.array([[1.0], [2.0]], np.float32),
             "income": np.array([[3.0], [4.0]], np.float32),
             "home": np.array([["own"], ["rent"]], dtype=object)}
    pred = m.predict(feeds)
    for log, ids in ((a, ["a1", "a2"]), (b, ["b1", "b2"])):
        log.record("credit", "1", m.schema, feeds, 2, pred, ids)
        log.flush()
    names = sorted(p.rsplit("/", 1)[1] for p in fs.ls(root, detail=False))
    assert len(names) == 2 and not any(n.endswith(".tmp") for n in names)
    # predictions-<prefix>-<time>-<tag>-<seq>.parquet: a tag per replica
    assert all(n.startswith("predictions-default-") for n in names)
    assert names[0].split("-")[3] != names[1].split("-")[3]
    tables = [pq.read_table(f"{where}/{n}", filesystem=a.filesystem) for n in names]
    assert sorted(i for t in tables for i in t.column("prediction_id").to_pylist()) == [
        "a1", "a2", "b1", "b2"]
    # the cap counts both replicas' files: one more write by a deletes the oldest
    size = sum(fs.info(f"{root}/{n}")["size"] for n in names)
    a.max_total_bytes = size + 1
    a.record("credit", "1", m.schema, feeds, 2, pred, ["a3", "a4"])
    a.flush()
    assert len(fs.ls(root, detail=False)) == 2


def test_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, base = resolve_location("rel/log")
    assert fs.type_name == "local" and base == str(tmp_path / "rel" / "log")
    fs, base = resolve_location(f"file://{tmp_path}/x")
    assert fs.type_name == "local" and base == f"{tmp_path}/x"
    fs, base = resolve_location("s3://bucket/prefix?region=us-east-1")
    assert is_object_store(fs) and base == "bucket/prefix"
    fs, base = resolve_location("gs://bucket/prefix")
    assert fs.type_name == "gcs" and is_object_store(fs) and base == "bucket/prefix"
    with pytest.raises(Exception, match="query parameter"):  # pyarrow's message, not fsspec's
        resolve_location("gs://bucket/prefix?anonymous=true")


def test_settings_take_the_location_from_the_environment(monkeypatch):
    monkeypatch.setenv("RAYLANE_PREDICTION_LOG", "s3://shared/log")
    settings = ServingSettings.model_validate({"prediction_log": {"directory": None}})
    assert settings.prediction_log.directory == "s3://shared/log"
    explicit = ServingSettings.model_validate({"prediction_log": {"directory": "/data/log"}})
    assert explicit.prediction_log.directory == "/data/log"
    monkeypatch.delenv("RAYLANE_PREDICTION_LOG")
    settings = ServingSettings.model_validate({"prediction_log": {}})
    assert settings.prediction_log.directory == "/tmp/raylane/prediction_log"


def test_a_request_that_half_fits_the_buffer_keeps_its_first_rows_with_their_ids(tmp_path):
    m = loaded("1")
    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=100,
                        max_buffered_rows=250, flush_interval_s=3600, seed=0)
    n = 100
    feeds = {"age": np.arange(n, dtype=np.float32).reshape(-1, 1),
             "income": np.ones((n, 1), np.float32),
             "home": np.array([["own"]] * n, dtype=object)}
    pred = m.predict(feeds)
    with log._writing:  # a write is under way
        for r in range(3):
            log.record("credit", "1", m.schema, feeds, n, pred, [f"{r}-{i}" for i in range(n)])
    assert (log.buffered_rows, log.dropped_rows) == (250, 50)
    (f,) = log.flush()
    t = pq.read_table(f).flatten()
    assert t.column("prediction_id").to_pylist()[200:] == [f"2-{i}" for i in range(50)]
    assert t.column("input.age").to_pylist()[200:] == list(range(50))
