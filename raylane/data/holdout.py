"""A holdout that is the same for every retrain: each row lands in the holdout or not by a hash
of its key, never by a random draw.

Because the assignment depends only on the row (and a fixed seed), a row that is in the holdout
today was in the holdout of every earlier model this pipeline trained, and will be in the next
one's: no model trained by the pipeline ever trains on a holdout row, so champion and challenger
can be compared on those rows fairly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

BUCKETS = 10_000


@dataclass(frozen=True)
class HoldoutDefinition:
    """What decides holdout membership; recorded with every judged decision."""

    fraction: float
    key_columns: tuple[str, ...]  # sorted; the row key's columns (features and target)
    hash_seed: int
    time_column: str | None = None
    newest_fraction: float | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["key_columns"] = list(self.key_columns)
        out["method"] = "pandas.util.hash_pandas_object(key columns) % 10000 < fraction * 10000"
        return out


def _normalized(series: pd.Series) -> pd.Series:
    """Values as they hash the same whatever file format or dtype they were read with."""
    if ptypes.is_bool_dtype(series) or not ptypes.is_numeric_dtype(series):
        return series.astype(object).where(series.notna(), "").astype(str)
    # float32-rounded like the model's inputs: 5 (int) and 5.0 (float) are one value
    numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.Series(numbers.astype(np.float32).astype(np.float64), index=series.index)


def row_buckets(frame: pd.DataFrame, key_columns: Sequence[str], hash_seed: int) -> np.ndarray:
    """Each row's bucket in ``[0, BUCKETS)``, from a hash of its ``key_columns`` values."""
    missing = [c for c in key_columns if c not in frame.columns]
    if missing:
        raise KeyError(f"judging.key_columns: columns {missing} are not in the data")
    keys = pd.DataFrame({c: _normalized(frame[c]) for c in sorted(key_columns)},
                        index=frame.index)
    hash_key = f"{hash_seed:016d}"[-16:]  # pandas takes a 16-byte key
    hashed = pd.util.hash_pandas_object(keys, index=False, hash_key=hash_key).to_numpy()
    return (hashed % np.uint64(BUCKETS)).astype(np.int64)


def holdout_mask(frame: pd.DataFrame, definition: HoldoutDefinition) -> np.ndarray:
    """True for the rows of ``frame`` that belong to the stable holdout."""
    buckets = row_buckets(frame, definition.key_columns, definition.hash_seed)
    return buckets < round(definition.fraction * BUCKETS)


def newest_mask(frame: pd.DataFrame, definition: HoldoutDefinition,
                is_new: np.ndarray | None) -> np.ndarray:
    """The rows that count as newest: the last ``newest_fraction`` by ``time_column`` when the
    data has one, else the rows marked new (``is_new``), else all rows."""
    if definition.time_column:
        times = frame[definition.time_column]
        if not ptypes.is_numeric_dtype(times):
            times = pd.to_datetime(times, utc=True, errors="coerce")
        cutoff = times.quantile(1.0 - (definition.newest_fraction or 0.5))
        return (times >= cutoff).to_numpy(dtype=bool)
    if is_new is not None and np.asarray(is_new).any():
        return np.asarray(is_new, dtype=bool)
    return np.ones(len(frame), dtype=bool)
