"""The xgboost.DataIter a data-parallel worker builds its matrix from: batch by batch it gives
the same quantile matrix and model as one matrix of all rows; and the preprocessing fitted from
aggregates equals the one fitted on the rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb

from raylane.model.preprocessing import build_preprocessor
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.training.data_parallel import LABEL_COLUMN, BatchIter, preprocessor_from_stats


class Batches:
    """What ``ray.train.get_dataset_shard`` returns, as far as BatchIter uses it."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame
        self.passes = 0

    def iter_batches(self, batch_size: int, batch_format: str):
        self.passes += 1
        for start in range(0, len(self.frame), batch_size):
            part = self.frame.iloc[start:start + batch_size]
            yield {c: part[c].to_numpy() for c in part.columns}


def test_batches_build_the_same_model_as_one_matrix():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 4)).astype(np.float32)
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(scale=0.5, size=5000) > 0).astype(np.float32)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(4)]).assign(**{LABEL_COLUMN: y})
    source = Batches(frame)
    batched = xgb.QuantileDMatrix(BatchIter(source, list(frame.columns[:4]), batch_size=700),
                                  max_bin=64)
    whole = xgb.QuantileDMatrix(X, label=y, max_bin=64)
    assert source.passes >= 1 and batched.num_row() == 5000
    params = {"objective": "binary:logistic", "tree_method": "hist", "max_bin": 64}
    a = xgb.train(params, batched, 10).predict(xgb.DMatrix(X))
    b = xgb.train(params, whole, 10).predict(xgb.DMatrix(X))
    np.testing.assert_allclose(a, b, atol=1e-3)  # sketches per batch vs whole: near-identical
    np.testing.assert_array_equal(batched.get_label(), y)


def test_preprocessing_from_aggregates_equals_the_fitted_one():
    schema = FeatureSchema(task="classification", target="y", class_labels=["0", "1"], columns=[
        ColumnSpec(name="a", kind="numeric", dtype="float64"),
        ColumnSpec(name="c", kind="categorical", dtype="str", categories=["u", "v"])])
    rows = pd.DataFrame({"a": [1.0, np.nan, 3.0, 10.0], "c": ["v", "", "u", "v"]})
    fitted = build_preprocessor(schema, scale_numeric=False).fit(rows)
    built = preprocessor_from_stats(schema, {"a": 3.0}, {"c": ["", "u", "v"]})
    probe = pd.DataFrame({"a": [np.nan, 2.0], "c": ["u", "w"]})
    np.testing.assert_array_equal(built.transform(probe), fitted.transform(probe))
    assert list(built.get_feature_names_out()) == list(fitted.get_feature_names_out())
