"""The prediction log's retention by age: real files, the settings a deployment is given."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from raylane.model.onnx_model import Prediction
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.serving.dataplane import DataPlane
from raylane.serving.holder import ModelHolder
from raylane.serving.prediction_log import PredictionLog
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry

SCHEMA = FeatureSchema(
    task="classification", target="y", class_labels=["bad", "good"],
    columns=[ColumnSpec(name="age", kind="numeric", dtype="float64")],
)
DAY = 86400


def batch(n: int) -> tuple[dict, Prediction]:
    feeds = {"age": np.arange(n, dtype=np.float32).reshape(-1, 1)}
    pred = Prediction(labels=np.zeros(n, dtype=np.int64),
                      probabilities=np.tile(np.array([[0.7, 0.3]], np.float32), (n, 1)))
    return feeds, pred


def aged(path, days: float):
    """A file of some bytes last written ``days`` ago."""
    path.write_bytes(b"x" * 100)
    then = time.time() - days * DAY
    os.utime(path, (then, then))
    return path


def test_files_older_than_the_age_limit_go_only_under_this_deployments_prefix(tmp_path):
    """Configured as a deployment is (its user_config), far under the size cap: a flush deletes
    this deployment's files older than ``max_age_days`` (a crashed writer's ``.tmp`` too) and
    nothing of another deployment's, nor anything not a log file."""
    stale = aged(tmp_path / "predictions-credit-20200101T000000-aaaa-000001.parquet", 3)
    orphan = aged(tmp_path / "predictions-credit-20200101T000000-aaaa-000002.parquet.tmp", 3)
    recent = aged(tmp_path / "predictions-credit-20200101T000000-aaaa-000003.parquet", 0.5)
    canary = aged(tmp_path / "predictions-credit-canary-20200101T000000-bbbb-000001.parquet", 3)
    other = aged(tmp_path / "notes.txt", 3)
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    plane.configure(ServingSettings.model_validate({
        "model_uri": "models:/credit@champion", "prediction_log": {
            "enabled": True, "directory": str(tmp_path), "sample_rate": 1.0,
            "flush_rows": 10**6, "flush_interval_s": 3600, "max_total_bytes": 10**9,
            "max_age_days": 1}}))
    assert plane.plog is not None and plane.plog.max_age_s == DAY
    feeds, pred = batch(5)
    plane.plog.record("credit", "1", SCHEMA, feeds, 5, pred)
    (written,) = plane.plog.flush()
    assert not stale.exists() and not orphan.exists()
    assert recent.exists() and canary.exists() and other.exists()
    assert pq.read_metadata(written).num_rows == 5


def test_an_idle_log_still_ages_out_its_files(tmp_path):
    """No rows arrive: the housekeeping's maybe_flush still runs the pruning pass."""
    stale = aged(tmp_path / "predictions-default-20200101T000000-aaaa-000001.parquet", 2)
    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_interval_s=3600,
                        max_age_s=DAY, prune_interval_s=0.0, seed=0)
    log.maybe_flush()
    deadline = time.monotonic() + 30
    while stale.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stale.exists()
    without = PredictionLog(directory=str(tmp_path / "kept"), sample_rate=1.0, seed=0)
    kept = aged(tmp_path / "kept" / "predictions-default-20200101T000000-aaaa-000001.parquet",
                400)
    assert without.prune() == [] and kept.exists()  # no age limit: kept until the cap


def test_prune_ages_files_by_the_clock_given(tmp_path):
    """``prune(now=...)`` ages files by the clock given: the file just written goes two days
    later."""
    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=10**6,
                        max_age_s=DAY, seed=0)
    feeds, pred = batch(3)
    log.record("credit", "1", SCHEMA, feeds, 3, pred)
    (written,) = log.flush()
    assert log.prune() == []
    assert log.prune(now=time.time() + 2 * DAY) == [written]
    assert not os.path.exists(written)


@pytest.mark.parametrize("days", [0, -1, "a week", 10_000])
def test_a_bad_age_limit_names_the_field(days):
    with pytest.raises(ValidationError, match=r"prediction_log\.max_age_days\n  Input should be"):
        ServingSettings.model_validate({"prediction_log": {"max_age_days": days}})


def test_a_listing_without_mtimes_ages_files_by_the_time_stamp_in_their_names():
    """fsspec's memory filesystem lists no mtime: the name's UTC stamp (the first row's time)
    stands in."""
    where = f"memory://retention-{uuid.uuid4().hex}"
    log = PredictionLog(directory=where, sample_rate=1.0, flush_rows=10**6, max_age_s=DAY,
                        seed=0)
    feeds, pred = batch(3)
    log.record("credit", "1", SCHEMA, feeds, 3, pred)
    (written,) = log.flush()
    assert log.filesystem.get_file_info(written).mtime_ns is None
    assert log.prune() == []
    assert log.prune(now=time.time() + 2 * DAY) == [written]
