"""Sampled prediction logging to Parquet: the record continuous training reads to detect drift.

Each file holds rows ``timestamp`` (UTC), ``model_name``, ``model_version``, ``input`` (a struct of
the raw feature columns; ``pyarrow.Table.flatten()`` gives ``input.<column>``), ``prediction``
(class label or value) and, for classifiers, ``probabilities``. Rows are buffered in memory and
written by a background thread as one closed file per flush (``flush_rows`` bounds a file's size);
the oldest files are deleted once the directory holds more than ``max_total_bytes``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raylane.onnx_model import Prediction
from raylane.schema import FeatureSchema

log = logging.getLogger("ray.serve")
FILE_PREFIX = "predictions-"


@dataclass
class _Chunk:
    timestamp: float
    name: str
    version: str
    schema: FeatureSchema
    inputs: dict[str, np.ndarray]
    prediction: list
    probabilities: np.ndarray | None


@dataclass
class PredictionLog:
    """Buffer sampled rows and write them as rotated, size-capped Parquet files."""

    directory: str
    sample_rate: float = 0.01
    flush_rows: int = 10_000
    flush_interval_s: float = 30.0
    max_total_bytes: int = 256 * 2**20
    seed: int | None = None
    _chunks: list[_Chunk] = field(default_factory=list)
    _rows: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _writing: threading.Lock = field(default_factory=threading.Lock)
    _rng: np.random.Generator | None = None
    _tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _seq: int = 0

    def __post_init__(self) -> None:
        Path(self.directory).mkdir(parents=True, exist_ok=True)
        self._rng = np.random.default_rng(self.seed)

    def record(
        self, name: str, version: str, schema: FeatureSchema, feeds: dict[str, np.ndarray],
        n: int, pred: Prediction,
    ) -> None:
        """Sample rows of one request into the buffer (cheap when nothing is sampled)."""
        if self.sample_rate <= 0:
            return
        if self.sample_rate >= 1:
            idx = None
        else:
            mask = self._rng.random(n) < self.sample_rate
            if not mask.any():
                self._maybe_flush()
                return
            idx = np.flatnonzero(mask)
        take = (lambda a: a) if idx is None else (lambda a: a[idx])
        inputs = {k: take(v.reshape(-1)) for k, v in feeds.items()}
        if pred.values is not None:
            prediction, probs = take(pred.values).tolist(), None
        else:
            labels = schema.class_labels or []
            prediction = [labels[i] for i in take(pred.labels).tolist()]
            probs = take(pred.probabilities)
        chunk = _Chunk(time.time(), name, version, schema, inputs, prediction, probs)
        with self._lock:
            self._chunks.append(chunk)
            self._rows += len(prediction)
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        due = self._rows >= self.flush_rows or (
            self._rows and time.monotonic() - self._last_flush >= self.flush_interval_s
        )
        if due and not self._writing.locked():
            threading.Thread(target=self.flush, name="prediction-log", daemon=True).start()

    def flush(self) -> list[Path]:
        """Write buffered rows now (one file per model version); return the files written."""
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
                    log.exception("prediction log: could not write %d chunks", len(group))
            self._enforce_cap()
            return written

    def _write(self, chunks: list[_Chunk]) -> Path:
        schema = chunks[0].schema
        counts = [len(c.prediction) for c in chunks]
        ts = np.repeat(np.array([c.timestamp for c in chunks]), counts)
        inputs = {
            col.name: np.concatenate([c.inputs[col.name] for c in chunks]) for col in schema.columns
        }
        struct = pa.StructArray.from_arrays(
            [
                pa.array(inputs[c.name], type=pa.float32() if c.kind == "numeric" else pa.string())
                for c in schema.columns
            ],
            names=schema.feature_names,
        )
        total = int(sum(counts))
        columns = {
            "timestamp": pa.array((ts * 1000).astype("int64"), type=pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "model_name": pa.array([chunks[0].name] * total, type=pa.string()),
            "model_version": pa.array([chunks[0].version] * total, type=pa.string()),
            "input": struct,
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
        self._seq += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(chunks[0].timestamp))
        path = Path(self.directory) / f"{FILE_PREFIX}{stamp}-{self._tag}-{self._seq:06d}.parquet"
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(pa.table(columns), tmp, compression="zstd")
        os.replace(tmp, path)  # readers only ever see whole files
        return path

    def _enforce_cap(self) -> None:
        files = sorted(
            Path(self.directory).glob(f"{FILE_PREFIX}*.parquet"), key=lambda p: p.stat().st_mtime
        )
        total = sum(p.stat().st_size for p in files)
        while files and total > self.max_total_bytes:
            oldest = files.pop(0)
            total -= oldest.stat().st_size
            oldest.unlink(missing_ok=True)
