"""Binary metrics count the configured positive class (raylane/model/metrics.py), not whichever
label
sorts last."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from raylane.data.read import infer_schema, split_data
from raylane.model.metrics import METRICS, evaluate_all
from raylane.release.gates import evaluate

Y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
PROBA = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8],
                  [0.1, 0.9], [0.3, 0.7], [0.2, 0.8], [0.1, 0.9], [0.4, 0.6]])


def test_f1_counts_the_bound_positive_class():
    labels = PROBA.argmax(axis=1)
    f1 = METRICS["f1"]
    assert f1.with_pos_label(0)(Y, PROBA) == skm.f1_score(Y, labels, pos_label=0)
    assert f1.with_pos_label(1)(Y, PROBA) == skm.f1_score(Y, labels, pos_label=1)
    assert f1.with_pos_label(0)(Y, PROBA) != f1.with_pos_label(1)(Y, PROBA)
    assert evaluate_all("classification", Y, PROBA, pos_label=0)["f1"] == \
        skm.f1_score(Y, labels, pos_label=0)


def test_the_holdout_f1_of_an_evaluation_counts_the_minority_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=600)
    y = np.where(x + rng.normal(scale=1.0, size=600) > 1.0, "bad", "good")  # "bad" is rare
    frame = pd.DataFrame({"x": x, "y": y})
    data = split_data(frame, infer_schema(frame, "y", "classification"), 0.2, 0.2, 0)
    assert data.pos_label == "bad"
    model = Pipeline([("m", LogisticRegression())]).fit(data.train.X, data.train.y)
    ev = evaluate(model, data, METRICS["f1"].with_pos_label(data.pos_index), 0.25)
    predicted = model.predict(data.holdout.X)
    assert ev.holdout["f1"] == skm.f1_score(data.holdout.y, predicted, pos_label=0)
    assert ev.holdout["f1"] != skm.f1_score(data.holdout.y, predicted, pos_label=1)
