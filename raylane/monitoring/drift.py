"""Per-column and dataset drift of a window of logged rows against a version's reference sample.

Columns are Arrow arrays (what the log reader and the reference Parquet give); missing values
(null, NaN, +-inf, and the empty string the graph uses for a missing category) are left out of the
tests, as Evidently drops them, and reported as missing-rate changes instead.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylane.config import DriftConfig
from raylane.model.schema import MISSING_CATEGORY
from raylane.monitoring import stattests as st


@dataclass
class ColumnDrift:
    """One column's drift decision and what the report shows next to it."""

    name: str
    kind: str
    method: str
    score: float | None
    threshold: float | None
    drift: bool
    psi: float | None = None
    psi_drift: bool = False
    reference_rows: int = 0
    current_rows: int = 0
    missing: dict = field(default_factory=dict)
    unseen_categories: dict | None = None

    def to_dict(self) -> dict:
        return finite(asdict(self))


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities (JSON has none) replaced by None, recursively."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    return obj


@dataclass
class Sample:
    """A column without its missing values, as counts, and its missing share."""

    counts: st.Counts
    rows: int
    missing: int

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


def numeric_sample(array: pa.Array | pa.ChunkedArray) -> Sample:
    values = _numpy(array)
    finite = values[np.isfinite(values)]
    return Sample(st.numeric_counts(finite), len(values), len(values) - len(finite))


def _numpy(array: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Floats in their own precision (float32 from the log), nulls as NaN."""
    if pa.types.is_null(array.type):
        return np.full(len(array), np.nan)
    if not pa.types.is_floating(array.type):
        array = pc.cast(array, pa.float64())
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    if not chunks:
        return np.zeros(0)
    return np.concatenate([c.to_numpy(zero_copy_only=False) for c in chunks])


def categorical_sample(array: pa.Array | pa.ChunkedArray) -> Sample:
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        array = pc.cast(array, pa.string())
    vc = pc.value_counts(array)
    keys = vc.field("values").to_pylist()
    counts = vc.field("counts").to_numpy()
    keep = np.array([k is not None and k != MISSING_CATEGORY for k in keys], dtype=bool)
    kept_keys = np.array([k for k, m in zip(keys, keep, strict=True) if m], dtype=object)
    return Sample(st.category_counts(kept_keys, counts[keep]), len(array),
                  int(len(array) - counts[keep].sum()))


def sample(array, kind: str) -> Sample:
    return numeric_sample(array) if kind == "numeric" else categorical_sample(array)


def column_drift(name: str, kind: str, ref: Sample, cur: Sample, cfg: DriftConfig,
                 known_categories: set[str] | None = None) -> ColumnDrift:
    """Evidently's default method and threshold for this column, its decision, PSI, missing
    rates and (categorical) values never seen in training."""
    missing = {
        "reference": ref.missing_rate, "current": cur.missing_rate,
        "change": cur.missing_rate - ref.missing_rate,
        "flagged": abs(cur.missing_rate - ref.missing_rate) > cfg.missing_rate_tolerance,
    }
    out = ColumnDrift(name, kind, method="none", score=None, threshold=None, drift=False,
                      reference_rows=ref.counts.n, current_rows=cur.counts.n, missing=missing)
    if kind == "categorical":
        out.unseen_categories = _unseen(cur.counts, known_categories or set())
    if ref.counts.n == 0 or cur.counts.n == 0:
        return out  # nothing to compare (Evidently refuses an empty column)
    test = st.STATTESTS[st.default_method(kind, ref.counts, cur.counts, cfg.stat_test_max_rows)]
    threshold = getattr(cfg, test.threshold_key)
    value = test.fn(ref.counts, cur.counts)
    out.method, out.score, out.threshold = test.name, value, threshold
    out.drift = test.drifted(value, threshold)
    psi = st.STATTESTS["psi"]  # reported beside every column's own method
    out.psi = psi.fn(ref.counts, cur.counts)
    out.psi_drift = psi.drifted(out.psi, getattr(cfg, psi.threshold_key))
    return out


def _unseen(cur: st.Counts, known: set[str]) -> dict:
    new = np.array([v not in known for v in cur.values], dtype=bool) if known else \
        np.zeros(len(cur.values), dtype=bool)
    rows = int(cur.counts[new].sum())
    order = np.argsort(-cur.counts[new])[:10]
    return {"rows": rows, "share": rows / cur.n if cur.n else 0.0,
            "values": [str(v) for v in cur.values[new][order]]}


@dataclass
class DatasetDrift:
    columns: list[ColumnDrift]
    drift_share: float
    dataset_drift: bool
    # name -> (reference, current) samples, for the distribution plots
    samples: dict[str, tuple[Sample, Sample]] = field(default_factory=dict, repr=False)

    @property
    def drifted_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.drift]


def dataset_drift(columns: list[ColumnDrift], drift_share: float) -> DatasetDrift:
    """Dataset drift when the share of drifted columns reaches ``drift_share`` (Evidently: >=)."""
    share = sum(c.drift for c in columns) / len(columns) if columns else 0.0
    return DatasetDrift(columns, share, bool(columns) and share >= drift_share)


def compare(reference: pa.Table, current: pa.Table, kinds: dict[str, str], cfg: DriftConfig,
            categories: dict[str, set[str]] | None = None, threads: int = 2) -> DatasetDrift:
    """Drift of every column in ``kinds`` (name -> numeric|categorical); columns in parallel
    threads (counting and sorting release the GIL)."""
    return compare_samples(reference, {n: sample(current.column(n), kinds[n]) for n in kinds},
                           kinds, cfg, categories, threads)


def compare_samples(reference: pa.Table, current: dict[str, Sample], kinds: dict[str, str],
                    cfg: DriftConfig, categories: dict[str, set[str]] | None = None,
                    threads: int = 2) -> DatasetDrift:
    """:func:`compare` with the current window already counted (raylane.monitoring.window)."""
    categories = categories or {}

    def one(name: str) -> tuple[ColumnDrift, Sample, Sample]:
        kind = kinds[name]
        ref, cur = sample(reference.column(name), kind), current[name]
        known = categories.get(name, set()) | {str(v) for v in ref.counts.values} \
            if kind == "categorical" else None
        return column_drift(name, kind, ref, cur, cfg, known), ref, cur

    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(one, kinds))
    out = dataset_drift([r[0] for r in results], cfg.drift_share)
    out.samples = {r[0].name: (r[1], r[2]) for r in results}
    return out
