"""Train / validation / holdout by a hash of each row's key: stateless, so every block of a table
is split where it lies, and a row lands in the same split in every run.

The holdout is exactly the stable holdout of :mod:`raylane.data.holdout` (bucket below
``holdout_fraction``); validation takes the next ``valid_fraction`` of the buckets and training the
rest. The small-data path keeps its stratified train / validation split; this one is for tables
read block by block (``tune.workers_per_trial`` > 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raylane.data.holdout import BUCKETS, HoldoutDefinition, row_buckets

TRAIN, VALID, HOLDOUT = 0, 1, 2
SPLIT_NAMES = {TRAIN: "train", VALID: "validation", HOLDOUT: "holdout"}


def split_codes(frame: pd.DataFrame, definition: HoldoutDefinition,
                valid_fraction: float) -> np.ndarray:
    """Each row's split (:data:`TRAIN`, :data:`VALID` or :data:`HOLDOUT`) as int8."""
    buckets = row_buckets(frame, definition.key_columns, definition.hash_seed)
    holdout_end = round(definition.fraction * BUCKETS)
    valid_end = holdout_end + round(valid_fraction * BUCKETS)
    codes = np.full(len(frame), TRAIN, dtype=np.int8)
    codes[buckets < valid_end] = VALID
    codes[buckets < holdout_end] = HOLDOUT
    return codes
