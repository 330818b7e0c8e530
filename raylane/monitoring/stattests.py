"""Drift statistics with Evidently's definitions (``evidently.legacy.calculations.stattests``),
computed from value counts so a million rows cost one counting pass per column.

Every function takes the two samples already cleaned of missing values, as ``Counts``: the sorted
distinct values of a sample and how often each occurs. The results equal Evidently's on the raw
samples (the unit tests check them against scipy on the raw values). :data:`STATTESTS` is the
table of methods: each one's score function, whether it is a p-value or a distance, when it means
drift and which threshold key of the config it reads; PSI bins as Evidently does (Sturges bins of
both samples for numeric columns with more than 20 reference values, else the values, zero
shares floored).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats
from scipy.spatial import distance


@dataclass(frozen=True)
class Counts:
    """A sample as its sorted distinct values and their counts."""

    values: np.ndarray
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def expand(self) -> np.ndarray:
        """The sample itself (sorted)."""
        return np.repeat(self.values, self.counts)


def numeric_counts(values: np.ndarray) -> Counts:
    """Counts of a float array without NaN; integer-valued data is counted without sorting, the
    rest sorted in its own precision (float32 from the log sorts faster and converts exactly)."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    if values.size == 0:
        return Counts(values.astype(np.float64), np.zeros(0, dtype=np.int64))
    lo, hi = float(values.min()), float(values.max())
    # Integral values in a modest range: one O(n) bincount instead of an O(n log n) sort.
    if hi - lo < 4 * values.size + 1_000_000 and hi - lo < 2**31:
        shifted = values.astype(np.float64) - lo
        ints = shifted.astype(np.int64)
        if np.array_equal(ints, shifted):
            counts = np.bincount(ints)
            present = np.flatnonzero(counts)
            return Counts(present.astype(np.float64) + lo, counts[present])
    uniq, counts = np.unique(values, return_counts=True)
    return Counts(uniq.astype(np.float64), counts)


def category_counts(keys: np.ndarray, counts: np.ndarray) -> Counts:
    """Counts of a categorical sample (keys are strings), sorted by key."""
    keys = np.asarray(keys, dtype=object)
    order = np.argsort(keys.astype(str), kind="stable")
    return Counts(keys[order], np.asarray(counts, dtype=np.int64)[order])


def aligned(ref: Counts, cur: Counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of both samples' values and each sample's count of every one of them."""
    keys = np.union1d(ref.values, cur.values)
    return keys, _counts_at(keys, ref), _counts_at(keys, cur)


def _counts_at(keys: np.ndarray, c: Counts) -> np.ndarray:
    out = np.zeros(len(keys), dtype=np.float64)
    if len(c.values):
        out[np.searchsorted(keys, c.values)] = c.counts
    return out


def n_distinct(ref: Counts, cur: Counts, cap: int | None = None) -> int:
    """Distinct values of both samples together; only known to exceed ``cap`` when it does."""
    most = max(len(ref.values), len(cur.values))
    if cap is not None and most > cap:
        return most
    return len(np.union1d(ref.values, cur.values))


def default_method(kind: str, ref: Counts, cur: Counts, stat_test_max_rows: int = 1000) -> str:
    """Evidently's ``_get_default_stattest``: by the *reference* size and distinct values."""
    values = n_distinct(ref, cur, cap=5)
    if ref.n <= stat_test_max_rows:
        if kind == "numeric" and values > 5:
            return "ks"
        return "chisquare" if values > 2 else "z"
    if kind == "numeric" and values > 5:
        return "wasserstein"
    return "jensenshannon"


def _cdfs(ref: Counts, cur: Counts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys, r, c = aligned(ref, cur)
    return keys, np.cumsum(r) / ref.n, np.cumsum(c) / cur.n


def wasserstein_norm(ref: Counts, cur: Counts) -> float:
    """W1(ref, cur) / max(std(ref), 0.001), as ``scipy.stats.wasserstein_distance`` / Evidently."""
    keys, fr, fc = _cdfs(ref, cur)
    w1 = float(np.sum(np.abs(fr[:-1] - fc[:-1]) * np.diff(keys)))
    mean = float(np.dot(ref.values, ref.counts)) / ref.n
    std = math.sqrt(max(float(np.dot((ref.values - mean) ** 2, ref.counts)) / ref.n, 0.0))
    return w1 / max(std, 0.001)


def ks_pvalue(ref: Counts, cur: Counts) -> float:
    """``scipy.stats.ks_2samp(ref, cur).pvalue`` (two-sided, method 'auto')."""
    return float(stats.ks_2samp(ref.expand(), cur.expand()).pvalue)


def chisquare_pvalue(ref: Counts, cur: Counts) -> float:
    """Evidently's chi-square: current counts against reference counts scaled to its size."""
    _, r, c = aligned(ref, cur)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(stats.chisquare(c, r * (cur.n / ref.n))[1])


def z_pvalue(ref: Counts, cur: Counts) -> float:
    """Evidently's two-proportion z-test (share of values other than the smallest key)."""
    _, r, c = aligned(ref, cur)
    if len(ref.values) == 1 and len(cur.values) == 1 and ref.values[0] == cur.values[0]:
        return 1.0
    n1, n2 = ref.n, cur.n
    p1, p2 = (n1 - r[0]) / n1, (n2 - c[0]) / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - stats.norm.cdf(np.abs(z))))


def jensenshannon(ref: Counts, cur: Counts) -> float:
    """Jensen-Shannon distance of the value shares (Evidently bins numeric columns with more than
    20 reference values; its default only picks this method for at most 5 values)."""
    r, c = _binned(ref, cur, fill_zeroes=False)
    return float(distance.jensenshannon(r, c))


def psi(ref: Counts, cur: Counts) -> float:
    """Population stability index as Evidently's ``_psi`` (its ``n_bins`` is unused there too)."""
    r, c = _binned(ref, cur, fill_zeroes=True)
    return float(np.sum((r - c) * np.log(r / c)))


def _binned(ref: Counts, cur: Counts, fill_zeroes: bool, numeric: bool | None = None):
    """Evidently's ``get_binned_data``: shares per Sturges bin of the combined numeric samples
    (more than 20 reference values) or per value."""
    numeric = ref.values.dtype.kind == "f" if numeric is None else numeric
    if numeric and len(ref.values) > 20:
        edges = sturges_edges(ref, cur)
        r = np.histogram(ref.values, edges, weights=ref.counts)[0] / ref.n
        c = np.histogram(cur.values, edges, weights=cur.counts)[0] / cur.n
    else:
        _, r, c = aligned(ref, cur)
        r, c = r / ref.n, c / cur.n
    if fill_zeroes:
        r, c = _fill_zeroes(r), _fill_zeroes(c)
    return r, c


def _fill_zeroes(shares: np.ndarray) -> np.ndarray:
    shares = shares.copy()
    smallest = shares[shares != 0].min()
    shares[shares == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return shares


def sturges_edges(ref: Counts, cur: Counts) -> np.ndarray:
    """``np.histogram_bin_edges(concat(ref, cur), bins='sturges')`` without concatenating."""
    n = ref.n + cur.n
    first = float(min(ref.values[0], cur.values[0]))
    last = float(max(ref.values[-1], cur.values[-1]))
    width = (last - first) / (np.log2(n) + 1.0)
    if first == last:
        first, last = first - 0.5, last + 0.5
    bins = int(np.ceil((last - first) / width)) if width else 1
    return np.linspace(first, last, bins + 1, endpoint=True)


@dataclass(frozen=True)
class StatTest:
    """A drift method: its score, what the score is, when it means drift, and the
    :class:`raylane.config.DriftConfig` key holding its threshold (Evidently's ``StatTest``)."""

    name: str
    fn: Callable[[Counts, Counts], float]
    score_kind: Literal["p_value", "distance"]
    comparison: Literal["<=", "<", ">="]  # drift when ``score <comparison> threshold``
    threshold_key: str
    title: str

    @property
    def p_value(self) -> bool:
        return self.score_kind == "p_value"

    def drifted(self, value: float, threshold: float) -> bool:
        return bool(_COMPARE[self.comparison](value, threshold))


_COMPARE = {"<=": operator.le, "<": operator.lt, ">=": operator.ge}

# Every drift method, as Evidently defines it: adding one is one row here (and its threshold
# key in DriftConfig, if it needs a new one).
STATTESTS: dict[str, StatTest] = {t.name: t for t in [
    StatTest("ks", ks_pvalue, "p_value", "<=", "ks_threshold", "Kolmogorov-Smirnov p-value"),
    StatTest("chisquare", chisquare_pvalue, "p_value", "<", "chisquare_threshold",
             "chi-square p-value"),
    StatTest("z", z_pvalue, "p_value", "<", "chisquare_threshold", "two-proportion z-test p-value"),
    StatTest("wasserstein", wasserstein_norm, "distance", ">=", "wasserstein_threshold",
             "Wasserstein distance (normed)"),
    StatTest("jensenshannon", jensenshannon, "distance", ">=", "jensenshannon_threshold",
             "Jensen-Shannon distance"),
    StatTest("psi", psi, "distance", ">=", "psi_threshold", "population stability index"),
]}
P_VALUE_METHODS = frozenset(name for name, t in STATTESTS.items() if t.p_value)


def drifted(method: str, value: float, threshold: float) -> bool:
    """Evidently's comparison for ``method`` (KS: p <= t; chi-square, z: p < t; else >= t)."""
    return STATTESTS[method].drifted(value, threshold)
