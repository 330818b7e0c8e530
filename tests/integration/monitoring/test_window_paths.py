"""The monitor reads a small prediction log in its own process and a large one with Ray Data:
both paths select the same rows (model, version, time window; ``*.parquet`` files only, nested
directories included) and count them alike, from a local directory or from S3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.s3 import KEYS, moto_server

from raylane.monitoring.reading import log_files, read_window
from raylane.monitoring.window import WindowSummary, reference_edges, summarize_window

pytestmark = pytest.mark.usefixtures("local_ray")

START = datetime(2026, 3, 1, tzinfo=UTC)
KINDS = {"x": "numeric", "c": "categorical", "prediction": "categorical"}


def _log_file(path: Path, model: str, version: str, rows: int, offset_s: int, seed: int) -> None:
    """One file in the service's log format: ``rows`` predictions a second apart."""
    rng = np.random.default_rng(seed)
    x = rng.normal(seed, 1, rows).astype(np.float32)
    x[rng.random(rows) < 0.1] = np.nan
    struct = pa.StructArray.from_arrays(
        [pa.array(x), pa.array(rng.choice(["a", "b", "c"], rows))], names=["x", "c"])
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "timestamp": pa.array([START + timedelta(seconds=offset_s + i) for i in range(rows)],
                              pa.timestamp("ms", tz="UTC")),
        "model_name": [model] * rows, "model_version": [version] * rows, "input": struct,
        "prediction": pa.array(rng.choice(["good", "bad"], rows)),
    }), path)


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("prediction-log")
    _log_file(root / "predictions-1.parquet", "credit", "1", 400, 0, 1)
    _log_file(root / "predictions-2.parquet", "credit", "2", 300, 200, 2)
    _log_file(root / "2026" / "03" / "predictions-3.parquet", "credit", "1", 500, 400, 3)
    _log_file(root / "predictions-4.parquet", "other", "1", 250, 0, 4)
    (root / "predictions-5.parquet.tmp").write_bytes(b"half a file a writer left behind")
    (root / "README").write_text("not a log file")
    return root


def _same(a: WindowSummary, b: WindowSummary) -> None:
    assert (a.rows, a.first, a.last, a.binned) == (b.rows, b.first, b.last, b.binned)
    assert a.samples.keys() == b.samples.keys()
    for name, sample in a.samples.items():
        other = b.samples[name]
        assert (sample.rows, sample.missing) == (other.rows, other.missing), name
        np.testing.assert_array_equal(sample.counts.values, other.counts.values)
        np.testing.assert_array_equal(sample.counts.counts, other.counts.counts)


def test_the_log_files_are_its_parquet_files(log):
    files = log_files(str(log))
    assert [Path(p).relative_to(log).as_posix() for p in files.paths] == [
        "2026/03/predictions-3.parquet", "predictions-1.parquet", "predictions-2.parquet",
        "predictions-4.parquet"]
    assert files.size == sum(Path(p).stat().st_size for p in files.paths)
    assert log_files(str(log / "absent")).paths == []
    assert log_files(f"file://{log}/predictions-1.parquet").paths == [
        f"{log}/predictions-1.parquet"]


@pytest.mark.parametrize(("version", "since", "until", "rows"), [
    ("1", None, None, 900),
    (None, None, None, 1200),
    ("1", START + timedelta(seconds=300), START + timedelta(seconds=600), 100 + 200),
    ("2", START + timedelta(days=1), None, 0),
])
def test_both_paths_count_the_same_window(log, version, since, until, rows):
    edges = reference_edges(pa.table({"x": np.linspace(-3, 6, 200)}), ["x"])
    summaries = [summarize_window(str(log), "credit", version, ["x", "c"], KINDS, edges,
                                  since=since, until=until, in_process_max_bytes=limit)
                 for limit in (2**40, 0)]  # in this process; with Ray Data
    assert summaries[0].rows == rows
    _same(*summaries)
    tables = [read_window(str(log), "credit", version, ["x", "c"], since=since, until=until,
                          in_process_max_bytes=limit) for limit in (2**40, 0)]
    assert [t.num_rows for t in tables] == [rows, rows]
    if rows:
        order = ["timestamp", "x", "c", "prediction"]
        in_process, ray_data = (t.select(order).to_pandas().sort_values(order, ignore_index=True)
                                for t in tables)
        pd.testing.assert_frame_equal(in_process, ray_data)  # NaN matching NaN


def test_an_absent_log_is_an_empty_window(tmp_path):
    for limit in (2**40, 0):
        summary = summarize_window(str(tmp_path / "none"), "credit", "1", ["x"], KINDS, {},
                                   in_process_max_bytes=limit)
        assert summary.rows == 0 and not summary.samples


def test_a_log_on_s3_reads_as_the_same_log_on_disk(log, tmp_path, monkeypatch):
    """The log on object storage (moto's S3 server), listed and read in this process as the
    monitor does on Kubernetes: the same files, rows and counts as on disk."""
    with moto_server(tmp_path, "predictions") as (endpoint, fs):
        for name, value in {**KEYS, "AWS_ENDPOINT_URL": endpoint}.items():
            monkeypatch.setenv(name, value)
        for path in log.rglob("*"):
            if path.is_file():
                key = f"predictions/log/{path.relative_to(log).as_posix()}"
                with fs.open_output_stream(key) as out:
                    out.write(path.read_bytes())
        uri = "s3://predictions/log"
        assert [p.removeprefix("predictions/log/") for p in log_files(uri).paths] == [
            Path(p).relative_to(log).as_posix() for p in log_files(str(log)).paths]
        since, until = START + timedelta(seconds=300), START + timedelta(seconds=600)
        edges = reference_edges(pa.table({"x": np.linspace(-3, 6, 200)}), ["x"])
        on_s3, on_disk = (summarize_window(where, "credit", "1", ["x", "c"], KINDS, edges,
                                           since=since, until=until)
                          for where in (uri, str(log)))
        assert on_s3.rows == 300
        _same(on_s3, on_disk)
        assert read_window(uri, "credit", None, ["x", "c"]).num_rows == 1200
