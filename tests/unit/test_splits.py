"""Train / validation / holdout splits (raylane/data/read.py ``split_data``): every class in every
split or a clear error before any work; the positive class for binary metrics; regression
splits stratified on the target's quantiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raylane.config import parse_config
from raylane.data.read import DataError, infer_schema, min_rows_per_class, split_data
from raylane.training.job import load_data


def classes_frame(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([[label] * n for label, n in counts.items()])
    rng.shuffle(labels)
    return pd.DataFrame({"x": rng.normal(size=len(labels)), "y": labels})


def split(frame: pd.DataFrame, valid: float = 0.2, holdout: float = 0.2, seed: int = 0,
          **kw):
    return split_data(frame, infer_schema(frame, "y", "classification"), valid, holdout, seed,
                      **kw)


def test_a_class_too_rare_for_every_split_is_a_data_error_naming_it_and_the_minimum():
    frame = classes_frame({"common": 300, "other": 200, "rare": 2})
    minimum = min_rows_per_class(0.2, 0.2)
    with pytest.raises(DataError, match=rf"class 'rare' has 2 rows.* at least {minimum}"):
        split(frame)


def test_load_data_refuses_a_rare_class_before_any_work(tmp_path):
    path = tmp_path / "rare.csv"
    classes_frame({"a": 200, "b": 100, "c": 1}).to_csv(path, index=False)
    config = parse_config({"data": {"path": str(path), "target": "y"},
                           "model": {"family": "xgboost"},
                           "mlflow": {"registered_model": "m"}})
    with pytest.raises(DataError, match=r"data\.target: class 'c' has 1 row"):
        load_data(config)


@pytest.mark.parametrize(("valid", "holdout"), [(0.2, 0.2), (0.1, 0.1), (0.45, 0.45),
                                                (0.05, 0.3), (0.3, 0.05)])
@pytest.mark.parametrize("seed", range(8))
def test_every_class_with_the_minimum_count_reaches_every_split(valid, holdout, seed):
    n = min_rows_per_class(valid, holdout)
    frame = classes_frame({"big": 500 + 37 * seed, "mid": 3 * n + seed, "rare": n,
                           "rare2": n + 1}, seed)
    data = split(frame, valid, holdout, seed)
    for part in (data.train, data.valid, data.holdout):
        assert set(np.unique(part.y)) == {0, 1, 2, 3}


def test_the_minority_class_is_the_default_positive_label():
    # "bad" is the minority and sorts first: f1 must count it, not the last label
    data = split(classes_frame({"bad": 100, "good": 300}))
    assert data.pos_label == "bad" and data.pos_index == 0


def test_a_configured_positive_label_is_used_and_checked():
    frame = classes_frame({"bad": 100, "good": 300})
    assert split(frame, pos_label="good").pos_index == 1
    with pytest.raises(DataError, match=r"data.pos_label: 'ugly' is not a class.*'bad', 'good'"):
        split(frame, pos_label="ugly")
    three = classes_frame({"a": 100, "b": 100, "c": 100})
    with pytest.raises(DataError, match=r"data\.pos_label: only for binary"):
        split(three, pos_label="a")
    assert split(three).pos_label is None


def test_numeric_positive_labels_match_the_class_labels():
    frame = pd.DataFrame({"x": np.arange(400.0), "y": [0] * 300 + [1] * 100})
    assert split(frame, pos_label=1).pos_label == "1"
    assert split(frame).pos_label == "1"  # the minority


def test_regression_splits_are_stratified_on_target_quantiles():
    """Each decile of the target lands in the holdout in proportion (within one row); a plain
    shuffle of this skewed target does not manage that."""
    rng = np.random.default_rng(3)
    y = rng.lognormal(sigma=1.5, size=1000)
    frame = pd.DataFrame({"x": rng.normal(size=1000), "y": y})
    schema = infer_schema(frame, "y", "regression")
    edges = np.quantile(y, np.linspace(0, 1, 11))[1:-1]
    for seed in range(3):
        data = split_data(frame, schema, 0.2, 0.2, seed)
        counts = np.bincount(np.searchsorted(edges, data.holdout.y), minlength=10)
        assert counts.max() - counts.min() <= 2, (seed, counts)
        again = split_data(frame, schema, 0.2, 0.2, seed)
        np.testing.assert_array_equal(again.holdout.y, data.holdout.y)  # deterministic


def test_tiny_regression_tables_still_split():
    frame = pd.DataFrame({"x": np.arange(30.0), "y": np.arange(30.0) ** 2})
    data = split_data(frame, infer_schema(frame, "y", "regression"), 0.2, 0.2, 0)
    assert len(data.train.y) + len(data.valid.y) + len(data.holdout.y) == 30
