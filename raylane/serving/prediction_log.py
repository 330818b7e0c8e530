"""Sampled prediction logging to Parquet: the record continuous training reads to detect drift.

Each file holds rows ``prediction_id`` (the id the client got back, see
:mod:`raylane.serving.prediction_ids`; labels that arrive later join on it), ``timestamp`` (UTC),
``model_name``, ``model_version``, ``input`` (a struct of the raw feature columns;
``pyarrow.Table.flatten()`` gives ``input.<column>``), ``prediction`` (class label or value) and,
for classifiers, ``probabilities``.

The location is a local directory or any URI pyarrow or fsspec knows (``s3://bucket/prefix``,
``gs://...``), so every replica on every node can log to one place: file names carry a random tag
per log instance (one per replica), a local file is written under a ``.tmp`` name and then moved,
an object-store file is one complete PUT (both atomic for readers). S3 settings come from the usual
environment (``AWS_ENDPOINT_URL`` for MinIO or another S3-compatible server, ``AWS_REGION``,
credentials) or from the URI's query (``s3://b/p?endpoint_override=host:9000&scheme=http``).

Rows are buffered in memory (at most ``max_buffered_rows``; more are dropped and counted in
:attr:`PredictionLog.dropped_rows`) and written by a background thread as one file per model
version and flush. File names start with ``predictions-<prefix>-`` (the prefix names the
deployment; by default its model); once the files of that prefix (every replica's, and ``.tmp``
files a crashed writer left) hold more than ``max_total_bytes``, the oldest of them are deleted,
so deployments sharing a location keep each other's history. With ``max_age_s`` set, the same
pass deletes that prefix's files last modified longer ago than that; it runs after each flush and,
while no rows arrive, every ``prune_interval_s`` (the replica's housekeeping calls
:meth:`PredictionLog.maybe_flush`).

What is logged is bounded: ``columns`` (if set) are the only inputs recorded; a string input is
cut so that a row's strings take at most ``max_row_bytes`` bytes; a local directory is created
``0700`` and its files ``0600`` (the rows are a client's raw features).
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylane.model.onnx_model import Prediction
from raylane.model.schema import FeatureSchema
from raylane.serving.prediction_ids import new_prediction_ids

log = logging.getLogger("ray.serve")
FILE_PREFIX = "predictions-"
TMP_SUFFIX = ".tmp"
OBJECT_STORES = {"s3", "s3a", "gcs", "gs", "abfs", "abfss", "az", "adl"}
PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def resolve_location(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and base path of a local directory or a URI pyarrow or fsspec knows."""
    if "://" not in location:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
    try:
        return pafs.FileSystem.from_uri(location)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        if isinstance(exc, pa.ArrowInvalid) and "Unrecognized filesystem" not in str(exc):
            raise  # pyarrow knows the scheme; the URI is wrong
        import fsspec  # a scheme only fsspec knows (or one this pyarrow was built without)

        fs, path = fsspec.core.url_to_fs(location)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def is_object_store(fs: pafs.FileSystem) -> bool:
    """True where one PUT is atomic and a move is a copy (S3, GCS, Azure; also via fsspec)."""
    handler = getattr(fs, "handler", None)
    if handler is not None and hasattr(handler, "fs"):
        protocols = handler.fs.protocol
        protocols = {protocols} if isinstance(protocols, str) else set(protocols)
        return bool(protocols & OBJECT_STORES)
    return fs.type_name in OBJECT_STORES


@dataclass
class _Chunk:
    timestamp: float
    name: str
    version: str
    schema: FeatureSchema
    ids: list[str]
    inputs: dict[str, np.ndarray]
    prediction: list
    probabilities: np.ndarray | None


@dataclass
class PredictionLog:
    """Buffer sampled rows and write them as rotated, size-capped Parquet files."""

    directory: str  # a local path or a URI (s3://bucket/prefix, gs://..., any fsspec URI)
    sample_rate: float = 0.01
    flush_rows: int = 10_000
    flush_interval_s: float = 30.0
    max_total_bytes: int = 256 * 2**20
    max_buffered_rows: int | None = None  # None: 2 x flush_rows
    seed: int | None = None
    prefix: str = "default"  # names the deployment: its files, and the ones its cap trims
    columns: list[str] | None = None  # the inputs recorded (None: every column)
    max_row_bytes: int = 4096  # a row's string inputs are cut to fit this (UTF-8 bytes)
    max_age_s: float | None = None  # this prefix's files older than this are deleted
    prune_interval_s: float = 600.0  # age pruning while idle: at most this often
    filesystem: pafs.FileSystem | None = None  # default: resolved from ``directory``
    _chunks: list[_Chunk] = field(default_factory=list)
    _rows: int = 0
    _dropped: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _last_prune: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _writing: threading.Lock = field(default_factory=threading.Lock)
    _rng: np.random.Generator | None = None
    _tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _seq: int = 0
    _base: str = ""

    def __post_init__(self) -> None:
        if self.filesystem is None:
            self.filesystem, self._base = resolve_location(self.directory)
        else:
            self._base = self.directory
        self._base = self._base.rstrip("/")
        if not PREFIX_PATTERN.fullmatch(self.prefix):
            raise ValueError(f"prediction log prefix {self.prefix!r}: expected letters, digits, "
                             "'_', '.' or '-' (at most 64)")
        self._local = isinstance(self.filesystem, pafs.LocalFileSystem)
        if self.max_buffered_rows is None:
            self.max_buffered_rows = 2 * self.flush_rows
        self._atomic_put = is_object_store(self.filesystem)
        self._rng = np.random.default_rng(self.seed)
        if self._atomic_put:
            return  # object stores have no directories (a missing bucket fails each write)
        try:
            self.filesystem.create_dir(self._base, recursive=True)
            if self._local:
                os.chmod(self._base, 0o700)  # the rows are clients' raw features
        except Exception:  # writes will fail, be logged and counted
            log.exception("prediction log: cannot create %s", self.directory)

    @property
    def dropped_rows(self) -> int:
        """Sampled rows never written: the buffer was full, or their write failed."""
        return self._dropped

    @property
    def buffered_rows(self) -> int:
        """Rows waiting for the next flush."""
        return self._rows

    def record(
        self, name: str, version: str, schema: FeatureSchema, feeds: dict[str, np.ndarray],
        n: int, pred: Prediction, ids: list[str] | None = None,
    ) -> None:
        """Sample rows of one request into the buffer (cheap when nothing is sampled).

        ``ids`` are the prediction ids returned to the client (new ones when None).
        """
        if self.sample_rate <= 0:
            return
        if self.sample_rate >= 1:
            idx = None
        else:
            mask = self._rng.random(n) < self.sample_rate
            if not mask.any():
                self.maybe_flush()
                return
            idx = np.flatnonzero(mask)
        room = self.max_buffered_rows - self._rows  # type: ignore[operator]
        k = n if idx is None else len(idx)
        if room < k:  # a write is slow or failing: keep memory bounded
            with self._lock:
                self._dropped += k - max(room, 0)
            if room <= 0:
                self.maybe_flush()
                return
            idx = np.arange(room) if idx is None else idx[:room]
        take = (lambda a: a) if idx is None else (lambda a: a[idx])
        if ids is None:
            ids = new_prediction_ids(n)
        row_ids = list(ids) if idx is None else [ids[i] for i in idx.tolist()]
        inputs = self._inputs(schema, feeds, take)
        if pred.values is not None:
            prediction, probs = take(pred.values).tolist(), None
        else:
            labels = schema.class_labels or []
            prediction = [labels[i] for i in take(pred.labels).tolist()]
            probs = take(pred.probabilities)
        chunk = _Chunk(time.time(), name, version, schema, row_ids, inputs, prediction, probs)
        with self._lock:
            self._chunks.append(chunk)
            self._rows += len(prediction)
        self.maybe_flush()

    def _inputs(self, schema: FeatureSchema, feeds: dict[str, np.ndarray], take) -> dict:
        """The sampled rows of the recorded columns; strings cut to the row's byte budget."""
        kept = [c for c in schema.columns if self.columns is None or c.name in self.columns]
        strings = sum(1 for c in kept if c.kind != "numeric")
        limit = self.max_row_bytes // (4 * strings) if strings else 0  # 4: UTF-8's widest char
        inputs = {}
        for col in kept:
            values = take(feeds[col.name].reshape(-1))
            if col.kind != "numeric" and max(map(len, values), default=0) > limit:
                values = np.array([v[:limit] for v in values], dtype=object)
            inputs[col.name] = values
        return inputs

    def maybe_flush(self) -> None:
        """Start a background write if enough rows wait or the interval passed (and none runs)."""
        due = self._rows >= self.flush_rows or (
            self._rows and time.monotonic() - self._last_flush >= self.flush_interval_s
        )
        # an idle log still ages out its files (a flush with no rows only prunes)
        due = due or (self.max_age_s is not None
                      and time.monotonic() - self._last_prune >= self.prune_interval_s)
        if due and not self._writing.locked():
            threading.Thread(target=self.flush, name="prediction-log", daemon=True).start()

    _maybe_flush = maybe_flush  # the name app.py's housekeeping used

    def flush(self) -> list[str]:
        """Write buffered rows now (one file per model version); return the paths written."""
        with self._writing:
            with self._lock:
                chunks, self._chunks, self._rows = self._chunks, [], 0
                self._last_flush = time.monotonic()
            written = []
            by_version: dict[tuple[str, str], list[_Chunk]] = {}
            for c in chunks:
                by_version.setdefault((c.name, c.version), []).append(c)
            for group in by_version.values():
                try:
                    written.append(self._write(group))
                except Exception:  # never let logging break serving
                    rows = sum(len(c.prediction) for c in group)
                    with self._lock:
                        self._dropped += rows
                    log.exception("prediction log: could not write %d rows", rows)
            try:
                self.prune()
            except Exception:
                log.exception("prediction log: could not apply the size cap or age limit")
            return written

    def _table(self, chunks: list[_Chunk]) -> pa.Table:
        schema = chunks[0].schema
        counts = [len(c.prediction) for c in chunks]
        ts = np.repeat(np.array([c.timestamp for c in chunks]), counts)
        logged = [col for col in schema.columns if col.name in chunks[0].inputs]
        struct = pa.StructArray.from_arrays(
            [
                pa.array(
                    np.concatenate([c.inputs[col.name] for c in chunks]),
                    type=pa.float32() if col.kind == "numeric" else pa.string(),
                )
                for col in logged
            ],
            names=[col.name for col in logged],
        ) if logged else None
        total = int(sum(counts))
        columns = {
            "prediction_id": pa.array([i for c in chunks for i in c.ids], type=pa.string()),
            "timestamp": pa.array((ts * 1000).astype("int64"), type=pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "model_name": pa.array([chunks[0].name] * total, type=pa.string()),
            "model_version": pa.array([chunks[0].version] * total, type=pa.string()),
            **({"input": struct} if struct is not None else {}),
            "prediction": pa.array(
                [p for c in chunks for p in c.prediction],
                type=pa.float32() if schema.task == "regression" else pa.string(),
            ),
        }
        if schema.task == "classification":
            probs = np.concatenate([c.probabilities for c in chunks]).astype(np.float32)
            columns["probabilities"] = pa.FixedSizeListArray.from_arrays(
                pa.array(probs.reshape(-1)), probs.shape[1]
            )
        return pa.table(columns)

    def _write(self, chunks: list[_Chunk]) -> str:
        table = self._table(chunks)
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(chunks[0].timestamp))
        path = (f"{self._base}/{FILE_PREFIX}{self.prefix}-{stamp}-{self._tag}-{self._seq:06d}"
                ".parquet")
        fs = self.filesystem
        assert fs is not None
        if self._atomic_put:
            # serialize first, then one PUT: a failure never leaves a partial object
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf, compression="zstd")
            with fs.open_output_stream(path) as out:
                out.write(buf.getvalue())
            return path
        tmp = path + TMP_SUFFIX
        try:
            with fs.open_output_stream(tmp) as out:
                pq.write_table(table, out, compression="zstd")
            if self._local:
                os.chmod(tmp, 0o600)
            fs.move(tmp, path)  # readers only ever see whole files
        except BaseException:
            with contextlib.suppress(OSError):
                fs.delete_file(tmp)
            raise
        return path

    def prune(self, now: float | None = None) -> list[str]:
        """Delete this prefix's files (``.tmp`` orphans too) older than ``max_age_s``, then the
        oldest while they are over the cap; return the paths deleted.

        ``now`` (seconds since the epoch) defaults to the clock; only files named
        ``predictions-<prefix>-<time stamp>-`` are considered, never another deployment's.
        """
        fs = self.filesystem
        assert fs is not None
        self._last_prune = time.monotonic()
        # the prefix, then the time stamp: "credit" is not a prefix of "credit-canary"'s files
        mine = re.compile(rf"{FILE_PREFIX}{re.escape(self.prefix)}-(\d{{8}}T\d{{6}})-")
        infos = [
            i for i in fs.get_file_info(pafs.FileSelector(self._base, allow_not_found=True))
            if i.type == pafs.FileType.File and mine.match(i.base_name)
            and (i.base_name.endswith(".parquet") or i.base_name.endswith(TMP_SUFFIX))
        ]
        infos.sort(key=lambda i: (i.mtime_ns or 0, i.base_name))
        doomed = []
        if self.max_age_s is not None:
            cutoff = (time.time() if now is None else now) - self.max_age_s
            old = [i for i in infos if _modified(i, mine) < cutoff]
            doomed += old
            infos = [i for i in infos if i not in old]
        total = sum(i.size or 0 for i in infos)
        while infos and total > self.max_total_bytes:
            oldest = infos.pop(0)
            total -= oldest.size or 0
            doomed.append(oldest)
        for info in doomed:
            # another replica's pruning may have deleted it since the listing
            with contextlib.suppress(FileNotFoundError):
                fs.delete_file(info.path)
        return [i.path for i in doomed]


def _modified(info: pafs.FileInfo, named: re.Pattern) -> float:
    """When a file was last written: its mtime, else the UTC time stamp in its name."""
    if info.mtime_ns:
        return info.mtime_ns / 1e9
    stamp = named.match(info.base_name).group(1)  # type: ignore[union-attr]
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%S"))
