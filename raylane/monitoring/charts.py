"""Monitoring figures: drift score per column against its threshold, and reference vs current
distributions of the drifted columns."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from raylane.monitoring.drift import ColumnDrift, Sample


def drift_scores(columns: list[ColumnDrift]) -> Figure:
    """One bar per column (red: drifted) with its threshold; p-value methods drift below it,
    distances at or above it."""
    shown = [c for c in columns if c.score is not None]
    fig, ax = plt.subplots(figsize=(8, max(3, 0.35 * len(shown) + 1)))
    y = np.arange(len(shown))
    ax.barh(y, [c.score for c in shown], color=["C3" if c.drift else "C0" for c in shown])
    ax.scatter([c.threshold for c in shown], y, marker="|", s=300, color="k", label="threshold")
    ax.set_yticks(y, [f"{c.name} ({c.method})" for c in shown])
    ax.set(xlabel="drift score (p-value: drift below threshold; distance: at or above)",
           title="Drift per column (red: drifted)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def distributions(pairs: dict[str, tuple[str, Sample, Sample]]) -> Figure:
    """Reference vs current shares, one panel per column (name -> (kind, ref, cur))."""
    n = max(1, len(pairs))
    fig, axes = plt.subplots(n, 1, figsize=(8, 3 * n), squeeze=False)
    for ax, (name, (kind, ref, cur)) in zip(axes[:, 0], pairs.items(), strict=False):
        if kind == "numeric":
            lo = min(ref.counts.values[0], cur.counts.values[0])
            hi = max(ref.counts.values[-1], cur.counts.values[-1])
            edges = np.linspace(lo, hi if hi > lo else lo + 1, 41)
            for s, label, color in ((ref, "reference", "C0"), (cur, "current", "C3")):
                c = s.counts
                shares = np.histogram(c.values, edges, weights=c.counts)[0] / c.n
                ax.stairs(shares, edges, label=label, color=color, fill=label == "reference",
                          alpha=0.5 if label == "reference" else 1)
        else:
            keys = sorted(set(ref.counts.values) | set(cur.counts.values), key=str)[:30]
            x = np.arange(len(keys))
            for offset, s, label, color in ((-0.2, ref, "reference", "C0"),
                                            (0.2, cur, "current", "C3")):
                share = dict(zip(s.counts.values, s.counts.counts / s.counts.n, strict=True))
                ax.bar(x + offset, [share.get(k, 0) for k in keys], 0.4, label=label, color=color)
            ax.set_xticks(x, [str(k) for k in keys], rotation=30)
        ax.set(title=name, ylabel="share")
        ax.legend()
    fig.tight_layout()
    return fig
