"""Issue 9 #9: the prediction log's failed writes, unbounded buffer and cap race (real files)."""

from __future__ import annotations

import errno
import os

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylane.model.onnx_model import Prediction
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.serving.prediction_log import PredictionLog

SCHEMA = FeatureSchema(
    task="classification", target="y", class_labels=["bad", "good"],
    columns=[ColumnSpec(name="age", kind="numeric", dtype="float64"),
             ColumnSpec(name="home", kind="categorical", dtype="object",
                        categories=["own", "rent"])],
)


def batch(n: int) -> tuple[dict, Prediction]:
    feeds = {"age": np.arange(n, dtype=np.float32).reshape(-1, 1),
             "home": np.array([["own"]] * n, dtype=object)}
    pred = Prediction(labels=np.zeros(n, dtype=np.int64),
                      probabilities=np.tile(np.array([[0.7, 0.3]], np.float32), (n, 1)))
    return feeds, pred


def files(d, pattern="predictions-*"):
    return sorted(p for p in d.glob(pattern) if p.is_file())


def test_a_failed_write_leaves_no_tmp_file(tmp_path, monkeypatch):
    """A write that fails half-way (disk full) removes its partial file."""
    real_write = pq.write_table

    def disk_full(table, where, **kw):
        real_write(table.slice(0, 1), where, **kw)  # some bytes reached the file
        raise OSError(errno.ENOSPC, "No space left on device")

    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=10**9, seed=0)
    feeds, pred = batch(20)
    log.record("credit", "1", SCHEMA, feeds, 20, pred)
    monkeypatch.setattr(pq, "write_table", disk_full)
    assert log.flush() == []  # logged, never raised
    assert files(tmp_path) == [], "a failed write left its partial file behind"
    monkeypatch.setattr(pq, "write_table", real_write)
    log.record("credit", "1", SCHEMA, feeds, 20, pred)
    assert len(log.flush()) == 1  # the next write works


def test_the_cap_counts_and_removes_orphaned_tmp_files(tmp_path):
    """A ``.tmp`` left by a crashed writer counts against the cap (oldest first)."""
    orphan = tmp_path / "predictions-20200101T000000-deadbeef-000001.parquet.tmp"
    orphan.write_bytes(os.urandom(200_000))
    os.utime(orphan, (1, 1))  # older than anything the log writes
    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=10**9,
                        max_total_bytes=50_000, seed=0)
    feeds, pred = batch(20)
    log.record("credit", "1", SCHEMA, feeds, 20, pred)
    (written,) = log.flush()
    assert sum(p.stat().st_size for p in files(tmp_path)) <= 50_000
    assert not orphan.exists()
    assert pq.read_metadata(written).num_rows == 20


def test_the_buffer_is_bounded_while_a_write_is_running(tmp_path):
    """Rows beyond the buffer's bound are dropped (and counted), not kept in memory."""
    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=100,
                        flush_interval_s=3600, seed=0)
    feeds, pred = batch(100)
    with log._writing:  # a slow write is under way: no flush can start
        for _ in range(50):
            log.record("credit", "1", SCHEMA, feeds, 100, pred)
    assert log._rows <= 2 * log.flush_rows, f"{log._rows} rows buffered during a write"
    kept = log._rows
    assert log.dropped_rows == 5000 - kept
    (written,) = log.flush()
    assert pq.read_metadata(written).num_rows == kept


class RacingPeer(pafs.FSSpecHandler):
    """The local disk, where another replica's cap deletes the oldest log file right after this
    replica listed the directory (the race, made deterministic)."""

    armed = False

    def get_file_info_selector(self, selector):
        infos = super().get_file_info_selector(selector)
        if not self.armed:
            return infos
        oldest = min((i for i in infos if i.type == pafs.FileType.File), key=lambda i: i.mtime_ns)
        os.unlink(oldest.path)
        return infos


class FullDisk(pafs.FSSpecHandler):
    """The local disk, filling up: a write gets some bytes out, then ENOSPC."""

    def open_output_stream(self, path, metadata):
        class Failing:
            def __init__(self, f):
                self.f, self.closed = f, False

            def write(self, data):
                self.f.write(bytes(data)[:10])
                raise OSError(errno.ENOSPC, "No space left on device")

            def close(self):
                self.f.close()
                self.closed = True

            def flush(self):
                self.f.flush()

        return pa.PythonFile(Failing(self.fs.open(path, mode="wb")), mode="w")


def test_a_file_deleted_during_the_cap_does_not_raise(tmp_path):
    """Another replica's cap deleted a file between this one's listing and its delete.

    Before the fix this raised FileNotFoundError out of flush() (seen with a Path.stat hook:
    the old cap listed with glob and called stat() per file)."""
    feeds, pred = batch(20)
    peer = RacingPeer(fsspec.filesystem("file"))
    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=10**9,
                        max_total_bytes=10**9, seed=0, filesystem=pafs.PyFileSystem(peer))
    for _ in range(3):
        log.record("credit", "1", SCHEMA, feeds, 20, pred)
        log.flush()
    assert len(files(tmp_path)) == 3
    peer.armed, log.max_total_bytes = True, 1024
    log.record("credit", "1", SCHEMA, feeds, 20, pred)
    assert len(log.flush()) == 1  # no raise
    # the cap went on past the file the peer deleted: every file was over the 1 KiB cap
    assert files(tmp_path) == []


def test_a_write_failing_on_the_filesystem_leaves_no_tmp_file(tmp_path):
    full = pafs.PyFileSystem(FullDisk(fsspec.filesystem("file")))
    log = PredictionLog(directory=str(tmp_path), sample_rate=1.0, flush_rows=10**9, seed=0,
                        filesystem=full)
    feeds, pred = batch(20)
    log.record("credit", "1", SCHEMA, feeds, 20, pred)
    assert log.flush() == []
    assert files(tmp_path) == []
    assert log.dropped_rows == 20
