"""The monitor's window counted block by block (raylane/monitoring/window.py) gives exactly the
drift report the whole window gives; past the distinct-value cap a column is counted on the
reference's bins and still flags a real shift."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from raylane.config import DriftConfig
from raylane.monitoring.drift import compare, compare_samples
from raylane.monitoring.window import (
    WindowSummary,
    merge,
    reference_edges,
    summarize_block,
)

KINDS = {"x": "numeric", "n": "numeric", "c": "categorical"}


def _table(rows: int, seed: int, shift: float = 0.0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = (rng.normal(shift, 1, rows)).astype(np.float32)
    x[rng.random(rows) < 0.05] = np.nan
    c = rng.choice(["a", "b", "", "d"], rows, p=[0.4, 0.3, 0.1, 0.2]).astype(object)
    c[rng.random(rows) < 0.05] = None
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pa.table({"x": x, "n": rng.integers(0, 30, rows).astype(np.float64),
                     "c": pa.array(c, pa.string()),
                     "timestamp": pa.array([start + timedelta(seconds=i) for i in range(rows)])})


def _summary(table: pa.Table, blocks: int, edges=None, cap: int = 100_000) -> WindowSummary:
    total = WindowSummary()
    for idx in np.array_split(np.arange(table.num_rows), blocks):
        part = table.take(pa.array(idx))
        total = merge(total, summarize_block(part, KINDS), edges or {}, cap)
    return total


def test_counted_blocks_give_the_whole_windows_report():
    reference, window = _table(3000, 0), _table(4000, 1, shift=0.3)
    cfg = DriftConfig()
    summary = _summary(window, 9)
    assert summary.rows == 4000 and not summary.binned
    assert summary.first == datetime(2026, 1, 1, tzinfo=UTC)
    assert summary.last == datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=3999)
    whole = compare(reference, window, KINDS, cfg)
    counted = compare_samples(reference, summary.samples, KINDS, cfg)
    assert [c.to_dict() for c in counted.columns] == [c.to_dict() for c in whole.columns]
    assert counted.dataset_drift == whole.dataset_drift
    assert "x" in counted.drifted_columns  # the shift is found


def test_past_the_cap_a_column_is_counted_on_the_reference_bins():
    reference, window = _table(3000, 0), _table(20_000, 2, shift=0.5)
    edges = reference_edges(reference, ["x", "n"])
    summary = _summary(window, 5, edges, cap=500)
    assert summary.binned == {"x"}  # n has 30 values: never binned
    assert len(summary.samples["x"].counts.values) <= len(edges["x"]) + 1
    assert summary.samples["x"].counts.n == np.isfinite(window.column("x").to_numpy(
        zero_copy_only=False)).sum()
    counted = compare_samples(reference, summary.samples, KINDS, DriftConfig())
    exact = compare(reference, window, KINDS, DriftConfig())
    x = {c.name: c for c in counted.columns}["x"]
    assert x.drift and exact.columns[0].drift
    assert abs(x.score - exact.columns[0].score) < 0.02


def test_a_block_past_the_cap_is_binned_where_it_lies_with_the_same_result():
    reference, window = _table(3000, 0), _table(20_000, 2, shift=0.5)
    edges = reference_edges(reference, ["x", "n"])
    one_block = summarize_block(window, KINDS, edges, max_distinct=500)
    assert one_block.binned == {"x"}  # the partial is the size of the bins, not of the block
    assert len(one_block.samples["x"].counts.values) <= len(edges["x"]) + 1
    # binned in the blocks or after merging exact counts: the same counts
    in_blocks = WindowSummary()
    for idx in np.array_split(np.arange(window.num_rows), 5):
        part = summarize_block(window.take(pa.array(idx)), KINDS, edges, max_distinct=500)
        in_blocks = merge(in_blocks, part, edges, 500)
    on_driver = _summary(window, 5, edges, cap=500)
    assert in_blocks.binned == on_driver.binned == {"x"}
    for name in KINDS:
        a, b = in_blocks.samples[name], on_driver.samples[name]
        np.testing.assert_array_equal(a.counts.values, b.counts.values)
        np.testing.assert_array_equal(a.counts.counts, b.counts.counts)
        assert (a.rows, a.missing) == (b.rows, b.missing)
