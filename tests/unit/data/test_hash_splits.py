"""Train / validation / holdout by a hash of each row's key: the holdout is the stable holdout,
a row's split does not depend on which block it is read in, and the shares are as configured."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raylane.data.holdout import HoldoutDefinition, holdout_mask
from raylane.data.splits import HOLDOUT, TRAIN, VALID, split_codes

DEFINITION = HoldoutDefinition(fraction=0.2, key_columns=("a", "b", "y"), hash_seed=3)


def _frame(rows: int = 20_000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"a": rng.normal(size=rows), "b": rng.choice(["u", "v", None], rows),
                         "y": rng.integers(0, 2, rows)})


def test_holdout_is_the_stable_holdout_and_shares_match():
    frame = _frame()
    codes = split_codes(frame, DEFINITION, valid_fraction=0.25)
    np.testing.assert_array_equal(codes == HOLDOUT, holdout_mask(frame, DEFINITION))
    shares = np.bincount(codes, minlength=3) / len(frame)
    assert abs(shares[HOLDOUT] - 0.2) < 0.015
    assert abs(shares[VALID] - 0.25) < 0.015
    assert abs(shares[TRAIN] - 0.55) < 0.015


def test_a_rows_split_does_not_depend_on_its_block_or_dtype():
    frame = _frame(3000)
    whole = split_codes(frame, DEFINITION, 0.2)
    blocks = np.concatenate([split_codes(frame.iloc[i:i + 700], DEFINITION, 0.2)
                             for i in range(0, len(frame), 700)])
    np.testing.assert_array_equal(whole, blocks)
    as_float = frame.assign(y=frame["y"].astype(np.float64))  # a block read with a missing value
    np.testing.assert_array_equal(whole, split_codes(as_float, DEFINITION, 0.2))


def test_another_seed_moves_rows():
    frame = _frame(3000)
    other = HoldoutDefinition(fraction=0.2, key_columns=("a", "b", "y"), hash_seed=4)
    assert (split_codes(frame, DEFINITION, 0.2) != split_codes(frame, other, 0.2)).mean() > 0.3
