"""Per-column statistics of a table too large for one process, computed block by block and merged
(Ray Data's ``AggregateFnV2``), so the driver holds a summary the size of the columns, never rows.

- :class:`Summary`: rows, per numeric column count / missing / sum / min / max, per categorical
  column the counts of each value (up to a cap: past it the column only records that it overflowed).
- Medians by rank brackets: each pass histograms the values inside the bracket that holds the
  wanted rank (:data:`BINS` bins, with each bin's smallest and largest value), and the next pass
  narrows to that bin. After :data:`MEDIAN_PASSES` passes the answer is exact when the bin
  holds one distinct value (every integer column of range below ``BINS**2``) or when the rank is
  the bin's first or last value; otherwise it is the middle of the bin's values, within
  ``(max - min) / BINS**MEDIAN_PASSES / 2`` of the exact median.

The functions on pandas frames are pure (tested without Ray); :class:`SummaryAggregate` and
:class:`BracketAggregate` wrap them as Ray Data aggregations (``AggregateFnV2``: per block, then
merged); :func:`run_aggregate` runs them.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from ray.data.aggregate import AggregateFnV2
from ray.data.block import BlockAccessor

from raylane.model.schema import MISSING_CATEGORY

BINS = 1024
MEDIAN_PASSES = 2
SPLIT_COLUMN = "__split"  # 0 train, 1 validation, 2 holdout (raylane/data/splits.py)


@dataclass
class NumericStats:
    count: int = 0  # present values
    missing: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def merge(self, other: NumericStats) -> NumericStats:
        return NumericStats(self.count + other.count, self.missing + other.missing,
                            self.total + other.total, min(self.low, other.low),
                            max(self.high, other.high))


@dataclass
class CategoryStats:
    """Counts per value (the missing value is :data:`MISSING_CATEGORY`); None once more than
    ``cap`` distinct values were seen (the column then only says it overflowed)."""

    cap: int
    counts: dict[str, int] | None = field(default_factory=dict)

    @property
    def overflowed(self) -> bool:
        return self.counts is None

    @property
    def missing(self) -> int:
        return (self.counts or {}).get(MISSING_CATEGORY, 0)

    def merge(self, other: CategoryStats) -> CategoryStats:
        if self.counts is None or other.counts is None:
            return CategoryStats(self.cap, None)
        counts = dict(self.counts)
        for value, n in other.counts.items():
            counts[value] = counts.get(value, 0) + n
        return CategoryStats(self.cap, counts if len(counts) <= self.cap else None)


@dataclass
class Summary:
    rows: int = 0
    numeric: dict[str, NumericStats] = field(default_factory=dict)
    categorical: dict[str, CategoryStats] = field(default_factory=dict)

    def merge(self, other: Summary) -> Summary:
        numeric = {k: self.numeric.get(k, NumericStats()).merge(v)
                   for k, v in other.numeric.items()}
        numeric = {**self.numeric, **numeric}
        categorical = dict(self.categorical)
        for k, v in other.categorical.items():
            categorical[k] = categorical[k].merge(v) if k in categorical else v
        return Summary(self.rows + other.rows, numeric, categorical)


def summarize(frame: pd.DataFrame, numeric: list[str], categorical: list[str],
              cap: int) -> Summary:
    """The summary of one block of prepared columns (numbers as floats with NaN for missing,
    categories as strings with :data:`MISSING_CATEGORY` for missing)."""
    out = Summary(rows=len(frame))
    for name in numeric:
        values = np.asarray(frame[name], dtype=np.float64)
        present = values[~np.isnan(values)]
        out.numeric[name] = NumericStats(
            count=int(present.size), missing=int(values.size - present.size),
            total=float(present.sum()), low=float(present.min()) if present.size else math.inf,
            high=float(present.max()) if present.size else -math.inf)
    for name in categorical:
        counts = frame[name].value_counts(sort=False)
        stats = CategoryStats(cap, {str(k): int(v) for k, v in counts.items()})
        out.categorical[name] = stats if len(counts) <= cap else CategoryStats(cap, None)
    return out


def summarize_by_split(frame: pd.DataFrame, numeric: list[str], categorical: list[str],
                       cap: int) -> dict[int, Summary]:
    """:func:`summarize` for each split the block's :data:`SPLIT_COLUMN` holds."""
    codes = np.asarray(frame[SPLIT_COLUMN])
    return {int(code): summarize(frame[codes == code], numeric, categorical, cap)
            for code in np.unique(codes)}


def merge_by_split(a: dict[int, Summary], b: dict[int, Summary]) -> dict[int, Summary]:
    out = dict(a)
    for code, summary in b.items():
        out[code] = out[code].merge(summary) if code in out else summary
    return out


def overall(by_split: dict[int, Summary]) -> Summary:
    total = Summary()
    for summary in by_split.values():
        total = total.merge(summary)
    return total


# Medians by rank brackets -------------------------------------------------------------------

@dataclass(frozen=True)
class Bracket:
    """Values ``low <= v < high`` (``<= high`` when ``closed``) of a column; ``below`` of its
    present values are smaller than ``low``."""

    low: float
    high: float
    closed: bool
    below: int = 0


@dataclass
class BracketCounts:
    below: int
    counts: np.ndarray  # per bin
    mins: np.ndarray  # smallest value per bin (inf when empty)
    maxs: np.ndarray

    def merge(self, other: BracketCounts) -> BracketCounts:
        return BracketCounts(self.below + other.below, self.counts + other.counts,
                             np.minimum(self.mins, other.mins), np.maximum(self.maxs, other.maxs))


def bracket_counts(values: np.ndarray, bracket: Bracket, bins: int = BINS) -> BracketCounts:
    """How the present ``values`` of one block fall into ``bins`` equal bins of ``bracket``."""
    values = values[~np.isnan(values)]
    inside = (values >= bracket.low) & ((values <= bracket.high) if bracket.closed
                                        else (values < bracket.high))
    chosen = values[inside]
    width = (bracket.high - bracket.low) / bins
    if width > 0:
        index = np.clip(((chosen - bracket.low) / width).astype(np.int64), 0, bins - 1)
    else:
        index = np.zeros(chosen.size, dtype=np.int64)
    counts = np.bincount(index, minlength=bins)
    mins = np.full(bins, np.inf)
    maxs = np.full(bins, -np.inf)
    np.minimum.at(mins, index, chosen)
    np.maximum.at(maxs, index, chosen)
    return BracketCounts(int((values < bracket.low).sum()), counts, mins, maxs)


@dataclass
class RankSearch:
    """Where the value of rank ``rank`` (0-based, among present values) of a column is."""

    rank: int
    bracket: Bracket
    value: float | None = None  # exact, once known
    estimate: float | None = None  # after the last pass, when not exact

    def narrow(self, found: BracketCounts, bins: int = BINS) -> None:
        """Move the bracket into the bin holding the rank (or settle the value)."""
        ahead = found.below
        cumulative = ahead + np.cumsum(found.counts)
        j = int(np.searchsorted(cumulative, self.rank, side="right"))
        start = int(cumulative[j - 1]) if j else ahead  # rank of the bin's first value
        lo, hi, n = float(found.mins[j]), float(found.maxs[j]), int(found.counts[j])
        if lo == hi or self.rank == start:
            self.value = lo
        elif self.rank == start + n - 1:
            self.value = hi
        else:
            b = self.bracket
            width = (b.high - b.low) / bins
            self.bracket = Bracket(b.low + j * width, b.low + (j + 1) * width if j < bins - 1
                                   else b.high, closed=b.closed and j == bins - 1, below=start)
            self.estimate = (lo + hi) / 2


def median_searches(stats: NumericStats) -> list[RankSearch]:
    """The one or two ranks whose values make the median of a column with ``stats``."""
    n = stats.count
    if n == 0:
        return []
    ranks = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
    return [RankSearch(r, Bracket(stats.low, stats.high, closed=True)) for r in ranks]


def median_of(searches: list[RankSearch]) -> float:
    if not searches:
        return math.nan
    values = [s.value if s.value is not None else s.estimate for s in searches]
    return float(np.mean(values))


def medians_local(frame: pd.DataFrame, stats: dict[str, NumericStats],
                  passes: int = MEDIAN_PASSES, bins: int = BINS) -> dict[str, float]:
    """:func:`medians` over a frame in this process (the reference for tests)."""
    searches = {name: median_searches(s) for name, s in stats.items()}
    for _ in range(passes):
        open_ = open_brackets(searches)
        if not open_:
            break
        found = count_brackets(frame, open_, bins)
        settle(searches, found, bins)
    return {name: median_of(s) for name, s in searches.items()}


def open_brackets(searches: dict[str, list[RankSearch]]) -> dict[str, list[Bracket]]:
    return {name: [s.bracket for s in items] for name, items in searches.items()
            if any(s.value is None for s in items)}


def count_brackets(frame: pd.DataFrame, brackets: dict[str, list[Bracket]],
                   bins: int = BINS) -> dict[str, list[BracketCounts]]:
    return {name: [bracket_counts(np.asarray(frame[name], dtype=np.float64), b, bins)
                   for b in items] for name, items in brackets.items()}


def settle(searches: dict[str, list[RankSearch]], found: dict[str, list[BracketCounts]],
           bins: int = BINS) -> None:
    for name, counts in found.items():
        for search, result in zip(searches[name], counts, strict=True):
            if search.value is None:
                search.narrow(result, bins)


def merge_bracket_counts(a: dict[str, list[BracketCounts]],
                         b: dict[str, list[BracketCounts]]) -> dict[str, list[BracketCounts]]:
    if not a:
        return b
    if not b:
        return a
    return {name: [x.merge(y) for x, y in zip(a[name], b[name], strict=True)] for name in a}


# Ray Data aggregations ----------------------------------------------------------------------

class _PickledAggregate(AggregateFnV2):
    """An aggregation whose accumulator is a pickled Python value (Ray stores it as bytes)."""

    def __init__(self, name: str, zero) -> None:
        self.zero = zero
        super().__init__(name, zero_factory=lambda: pickle.dumps(zero()), on=None,
                         ignore_nulls=False)

    def compute(self, frame: pd.DataFrame):
        raise NotImplementedError

    def merge_values(self, a, b):
        raise NotImplementedError

    def aggregate_block(self, block) -> bytes:
        # pyarrow's own conversion: NumPy dtypes, NaN for nulls (Ray's is Arrow-backed)
        frame = block.to_pandas() if isinstance(block, pa.Table) else \
            BlockAccessor.for_block(block).to_pandas()
        return pickle.dumps(self.compute(frame))

    def combine(self, current_accumulator: bytes, new: bytes) -> bytes:
        return pickle.dumps(self.merge_values(pickle.loads(current_accumulator),
                                              pickle.loads(new)))

    def finalize(self, accumulator: bytes) -> bytes:
        return accumulator


class SummaryAggregate(_PickledAggregate):
    """:func:`summarize_by_split` over a dataset."""

    def __init__(self, numeric: list[str], categorical: list[str], cap: int) -> None:
        self.numeric, self.categorical, self.cap = numeric, categorical, cap
        super().__init__("raylane_summary", dict)

    def compute(self, frame: pd.DataFrame) -> dict[int, Summary]:
        return summarize_by_split(frame, self.numeric, self.categorical, self.cap)

    def merge_values(self, a, b):
        return merge_by_split(a, b)


class BracketAggregate(_PickledAggregate):
    """:func:`count_brackets` over the rows of one split of a dataset."""

    def __init__(self, brackets: dict[str, list[Bracket]], split: int, bins: int = BINS) -> None:
        self.brackets, self.split, self.bins = brackets, split, bins
        super().__init__("raylane_brackets", dict)

    def compute(self, frame: pd.DataFrame):
        return count_brackets(frame[np.asarray(frame[SPLIT_COLUMN]) == self.split],
                              self.brackets, self.bins)

    def merge_values(self, a, b):
        return merge_bracket_counts(a, b)


def run_aggregate(dataset, aggregate: _PickledAggregate):
    """``aggregate`` over ``dataset``: each block's partial computed where the block lies,
    merged on the driver as the partials stream in (a few KB each; never rows).

    Not ``Dataset.aggregate``: its hash shuffle starts aggregator actors, which took 70 s for a
    4,454-row table on a 2-CPU local Ray; the partials here are what it would shuffle.
    """
    def partial(block: pa.Table) -> dict[str, np.ndarray]:
        return {"partial": np.array([aggregate.aggregate_block(block)], dtype=object)}

    merged = aggregate.zero()
    for batch in dataset.map_batches(partial, batch_format="pyarrow", batch_size=None,
                                     zero_copy_batch=True).iter_batches(batch_format="numpy"):
        for value in batch["partial"]:
            merged = aggregate.merge_values(merged, pickle.loads(value))
    return merged


def dataset_medians(dataset, stats: dict[str, NumericStats], split: int,
                    passes: int = MEDIAN_PASSES, bins: int = BINS) -> dict[str, float]:
    """The medians of ``stats``' columns over one split of ``dataset``, one pass per
    narrowing (see the module's docstring for how close)."""
    searches = {name: median_searches(s) for name, s in stats.items()}
    for _ in range(passes):
        open_ = open_brackets(searches)
        if not open_:
            break
        settle(searches, run_aggregate(dataset, BracketAggregate(open_, split, bins)), bins)
    return {name: median_of(s) for name, s in searches.items()}
