"""Reference vs current distributions of each column as shares, small enough to log as JSON with
every monitoring run (``monitoring/distributions.json``), so a console can draw any column's."""

from __future__ import annotations

import numpy as np

from raylane.monitoring.drift import Sample

BINS, TOP = 30, 30


def shares(pairs: dict[str, tuple[str, Sample, Sample]], bins: int = BINS,
           top: int = TOP) -> dict[str, dict]:
    """name -> (kind, reference, current) as shares: numbers on ``bins`` common bins, categories
    as the ``top`` most frequent of both (the rest left out)."""
    out: dict[str, dict] = {}
    for name, (kind, ref, cur) in pairs.items():
        r, c = ref.counts, cur.counts
        if r.n == 0 or c.n == 0:
            continue
        if kind == "numeric":
            lo = float(min(r.values[0], c.values[0]))
            hi = float(max(r.values[-1], c.values[-1]))
            edges = np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)
            out[name] = {"kind": "numeric", "edges": edges.tolist(),
                         "reference": _hist(r, edges), "current": _hist(c, edges)}
        else:
            ref_share = dict(zip(map(str, r.values), (r.counts / r.n).tolist(), strict=True))
            cur_share = dict(zip(map(str, c.values), (c.counts / c.n).tolist(), strict=True))
            keys = sorted(set(ref_share) | set(cur_share),
                          key=lambda k: -(ref_share.get(k, 0) + cur_share.get(k, 0)))[:top]
            out[name] = {"kind": "categorical", "categories": keys,
                         "reference": [ref_share.get(k, 0.0) for k in keys],
                         "current": [cur_share.get(k, 0.0) for k in keys]}
    return out


def _hist(counts, edges: np.ndarray) -> list[float]:
    return (np.histogram(counts.values, edges, weights=counts.counts)[0] / counts.n).tolist()
