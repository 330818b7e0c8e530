"""The data-parallel path's model without Ray's orchestration: blocks prepared and split by hash,
preprocessing built from the merged summaries, a booster trained from batches, wrapped as the
scikit-learn estimator and exported to the same raw-column ONNX graph, which reproduces it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import xgboost as xgb
from support.paths import CREDIT_CSV

from raylane.data.aggregates import medians_local, merge_by_split, summarize_by_split
from raylane.data.distributed import TARGET_COLUMN, prepare_block
from raylane.data.holdout import HoldoutDefinition
from raylane.data.read import infer_schema
from raylane.data.splits import HOLDOUT, TRAIN
from raylane.model.metrics import METRICS
from raylane.model.onnx_model import OnnxModel
from raylane.model.preprocessing import build_pipeline
from raylane.release.export import check_parity, to_onnx
from raylane.training.data_parallel import (
    LABEL_COLUMN,
    BatchIter,
    booster_params,
    preprocessor_from_stats,
    transform_block,
)
from raylane.training.scale_job import as_estimator


class Batches:
    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def iter_batches(self, batch_size: int, batch_format: str):
        for start in range(0, len(self.frame), batch_size):
            part = self.frame.iloc[start:start + batch_size]
            yield {c: part[c].to_numpy() for c in part.columns}


def test_booster_from_batches_exports_to_a_graph_that_reproduces_it():
    raw = pd.read_csv(CREDIT_CSV)
    schema = infer_schema(raw, "Status", "classification")
    definition = HoldoutDefinition(0.2, tuple(sorted([*schema.feature_names, "Status"])), 0)
    blocks = [prepare_block(pa.Table.from_pandas(raw.iloc[i:i + 1000], preserve_index=False),
                            schema, False, definition, 0.2) for i in range(0, len(raw), 1000)]
    summary: dict = {}
    for block in blocks:
        summary = merge_by_split(summary, summarize_by_split(block, schema.numeric,
                                                             schema.categorical, cap=200))
    prepared = pd.concat(blocks, ignore_index=True)
    train_rows = prepared[prepared["__split"] == TRAIN]
    medians = medians_local(train_rows, {c: summary[TRAIN].numeric[c] for c in schema.numeric})
    categories = {c: sorted(summary[TRAIN].categorical[c].counts) for c in schema.categorical}
    preprocessor = preprocessor_from_stats(schema, medians, categories)
    transformed = pd.concat([transform_block(b, preprocessor, schema) for b in blocks])
    features = [c for c in transformed.columns if c.startswith("f")]
    train = transformed[transformed["__split"] == TRAIN]
    dtrain = xgb.QuantileDMatrix(BatchIter(Batches(train), features, batch_size=500))
    params, rounds = booster_params({"n_estimators": 40, "max_depth": 3, "n_jobs": 1},
                                    schema, METRICS["roc_auc"], seed=0)
    booster = xgb.train(params, dtrain, num_boost_round=rounds)
    pipeline = build_pipeline(preprocessor, as_estimator(booster, schema.task))

    hold = prepared[prepared["__split"] == HOLDOUT]
    X = hold[schema.feature_names].reset_index(drop=True)
    y = np.asarray([schema.class_labels.index(v) for v in hold[TARGET_COLUMN]])
    native = pipeline.predict_proba(X)[:, 1]
    direct = booster.predict(xgb.DMatrix(
        transformed[transformed["__split"] == HOLDOUT][features].to_numpy()))
    np.testing.assert_allclose(native, direct, rtol=1e-6)  # the wrapper is the booster
    assert np.array_equal(transformed.loc[transformed["__split"] == HOLDOUT, LABEL_COLUMN], y)
    model = OnnxModel(to_onnx(pipeline, schema), schema)
    parity = check_parity(pipeline, model, X)
    assert parity.passed and parity.rows == len(X)
    assert METRICS["roc_auc"](y, pipeline.predict_proba(X)) > 0.75
