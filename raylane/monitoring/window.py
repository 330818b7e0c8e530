"""A window of the prediction log summarized block by block (with Ray Data where the blocks lie,
or file by file in this process for a small log), so the driver holds per-column value counts,
never the rows: what the drift tests compare is exactly what they would
get from the whole window (:func:`raylane.monitoring.drift.sample` merged across blocks).

A numeric column whose distinct values pass ``max_distinct`` is counted on the reference's
bins instead (its quantile edges; each bin counted at its midpoint, values beyond the
reference's range at its first or last edge): memory then grows with the bins, not the rows, and
the column's test is approximate (recorded in ``binned``).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raylane.monitoring import stattests as st
from raylane.monitoring.drift import Sample, sample
from raylane.monitoring.reading import (
    IN_PROCESS_MAX_BYTES,
    log_files,
    window_dataset,
    window_tables,
)

MAX_DISTINCT = 100_000
REFERENCE_BINS = 1_000


@dataclass
class WindowSummary:
    rows: int = 0
    samples: dict[str, Sample] = field(default_factory=dict)
    first: datetime | None = None
    last: datetime | None = None
    binned: set[str] = field(default_factory=set)


def merge_counts(a: st.Counts, b: st.Counts) -> st.Counts:
    if not len(a.values):
        return b
    if not len(b.values):
        return a
    keys = np.union1d(a.values, b.values)
    counts = np.zeros(len(keys), dtype=np.int64)
    counts[np.searchsorted(keys, a.values)] += a.counts
    counts[np.searchsorted(keys, b.values)] += b.counts
    return st.Counts(keys, counts)


def reference_edges(reference: pa.Table, numeric: list[str],
                    bins: int = REFERENCE_BINS) -> dict[str, np.ndarray]:
    """Quantile edges of each numeric column of the reference sample."""
    out = {}
    for name in numeric:
        counts = sample(reference.column(name), "numeric").counts
        if counts.n:
            out[name] = np.unique(np.quantile(counts.expand().astype(np.float64),
                                              np.linspace(0, 1, bins + 1)))
    return out


def coarsen(counts: st.Counts, edges: np.ndarray) -> st.Counts:
    """``counts`` on the bins of ``edges`` (each bin at its midpoint)."""
    if len(edges) < 2:
        return counts
    mids = np.r_[edges[0], (edges[:-1] + edges[1:]) / 2, edges[-1]]
    index = np.searchsorted(edges, np.asarray(counts.values, dtype=np.float64), side="right")
    index[np.asarray(counts.values, dtype=np.float64) == edges[-1]] = len(edges) - 1
    binned = np.bincount(index, weights=counts.counts, minlength=len(mids)).astype(np.int64)
    keep = binned > 0
    return st.Counts(mids[keep], binned[keep])


def summarize_block(table: pa.Table, kinds: dict[str, str],
                    edges: dict[str, np.ndarray] | None = None,
                    max_distinct: int = MAX_DISTINCT) -> WindowSummary:
    """One block's counts per column (``kinds``: name -> numeric|categorical, the prediction
    included), row count and time range. A numeric column with more than ``max_distinct``
    values in this block alone is counted on its ``edges`` here, where the block lies: the
    window it belongs to will be binned anyway (binning commutes with merging), and the partial
    sent to the driver stays the size of the bins, not of the block."""
    out = WindowSummary(rows=table.num_rows)
    for name, kind in kinds.items():
        if name in table.column_names:
            counted = sample(table.column(name), kind)
            if edges and name in edges and len(counted.counts.values) > max_distinct:
                counted = Sample(coarsen(counted.counts, edges[name]), counted.rows,
                                 counted.missing)
                out.binned.add(name)
            out.samples[name] = counted
    if table.num_rows and "timestamp" in table.column_names:
        lo, hi = pc.min_max(table.column("timestamp")).values()
        out.first, out.last = lo.as_py(), hi.as_py()
    return out


def merge(a: WindowSummary, b: WindowSummary, edges: dict[str, np.ndarray],
          max_distinct: int = MAX_DISTINCT) -> WindowSummary:
    out = WindowSummary(rows=a.rows + b.rows, binned=a.binned | b.binned)
    times = [t for t in (a.first, b.first) if t is not None]
    out.first = min(times) if times else None
    times = [t for t in (a.last, b.last) if t is not None]
    out.last = max(times) if times else None
    for name in {*a.samples, *b.samples}:
        parts = []
        for side in (a, b):
            s = side.samples.get(name)
            if s is None:
                continue
            if name in out.binned and name not in side.binned:
                s = Sample(coarsen(s.counts, edges[name]), s.rows, s.missing)
            parts.append(s)
        merged = parts[0] if len(parts) == 1 else Sample(
            merge_counts(parts[0].counts, parts[1].counts), parts[0].rows + parts[1].rows,
            parts[0].missing + parts[1].missing)
        if name not in out.binned and name in edges and len(merged.counts.values) > max_distinct:
            merged = Sample(coarsen(merged.counts, edges[name]), merged.rows, merged.missing)
            out.binned.add(name)
        out.samples[name] = merged
    return out


def summarize_dataset(dataset, kinds: dict[str, str], edges: dict[str, np.ndarray],
                      max_distinct: int = MAX_DISTINCT) -> WindowSummary:
    """:func:`summarize_block` on every block where it lies, merged on the driver as the
    partials stream in."""
    def partial(block: pa.Table) -> dict[str, np.ndarray]:
        summary = summarize_block(block, kinds, edges, max_distinct)
        return {"partial": np.array([pickle.dumps(summary)], dtype=object)}

    total = WindowSummary()
    for batch in dataset.map_batches(partial, batch_format="pyarrow", batch_size=None,
                                     zero_copy_batch=True).iter_batches(batch_format="numpy"):
        for value in batch["partial"]:
            total = merge(total, pickle.loads(value), edges, max_distinct)
    return total


def summarize_window(
    predictions: str, model_name: str, model_version: str | None, features: list[str],
    kinds: dict[str, str], edges: dict[str, np.ndarray], *, since: datetime | None = None,
    until: datetime | None = None, in_process_max_bytes: int = IN_PROCESS_MAX_BYTES,
    max_distinct: int = MAX_DISTINCT,
) -> WindowSummary:
    """The window ``[since, until)`` of ``model_name`` v``model_version`` in the log at
    ``predictions``, counted per column (``kinds``): file by file in this process when the log
    is at most ``in_process_max_bytes`` of Parquet, else with Ray Data where the blocks lie.
    Both give the same counts."""
    files = log_files(predictions)
    if not files.paths:
        return WindowSummary()
    if files.size <= in_process_max_bytes:
        total = WindowSummary()
        for table in window_tables(files, model_name, model_version, features, since=since,
                                   until=until):
            total = merge(total, summarize_block(table, kinds, edges, max_distinct), edges,
                          max_distinct)
        return total
    dataset = window_dataset(predictions, model_name, model_version, features, since=since,
                             until=until)
    if dataset is None:
        return WindowSummary()
    return summarize_dataset(dataset, kinds, edges, max_distinct)
