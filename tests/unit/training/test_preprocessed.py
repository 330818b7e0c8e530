"""The preprocessing fitted once and shared: one variant per family's ``scale_numeric``, models
fitted on it without refitting it, and a refit pipeline built from it. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer

from raylane.data.read import PreparedData, infer_schema, split_data
from raylane.model.families import get_family
from raylane.model.metrics import METRICS
from raylane.training.fit import fit_model, fit_preprocessed
from raylane.training.preprocessed import preprocess


@pytest.fixture(scope="module")
def data() -> PreparedData:
    rng = np.random.default_rng(0)
    rows = 200
    x = rng.normal(5.0, 3.0, size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    frame = pd.DataFrame({"x": np.where(rng.random(rows) < 0.1, np.nan, x), "colour": colour})
    frame["y"] = np.where(x + (colour == "red") > 5.5, "yes", "no")
    return split_data(frame, infer_schema(frame, "y", "classification"), 0.2, 0.2, seed=0,
                      source="tiny")


@pytest.fixture()
def fits(monkeypatch) -> list[int]:
    """Preprocessing fits in this process (``fit`` calls ``fit_transform`` too)."""
    counted: list[int] = []
    original = ColumnTransformer.fit_transform

    def fit_transform(self, X, y=None, **params):
        counted.append(len(X))
        return original(self, X, y, **params)

    monkeypatch.setattr(ColumnTransformer, "fit_transform", fit_transform)
    return counted


def test_each_family_variant_is_its_own_preprocessing(data):
    plain = preprocess(data, get_family("xgboost"))
    scaled = preprocess(data, get_family("linear"))
    assert plain.fits(get_family("random_forest")) and not plain.fits(get_family("linear"))
    assert scaled.fits(get_family("linear"))
    assert plain.X_train.dtype == scaled.X_train.dtype == np.float32
    assert plain.X_train.shape == scaled.X_train.shape == (len(data.train.y), 4)  # x + 3 colours
    # the numeric column: imputed in both, standardised only for the linear family
    assert abs(plain.X_train[:, 0].mean()) > 1.0
    assert abs(scaled.X_train[:, 0].mean()) < 1e-5
    assert np.array_equal(plain.y_valid, data.valid.y)


def test_models_fit_on_the_shared_splits_without_refitting_the_preprocessing(data, fits):
    family, auc = get_family("xgboost"), METRICS["roc_auc"]
    splits = preprocess(data, family)
    assert fits == [len(data.train.y)]  # fitted on the training split only

    reports: list[dict] = []
    for depth in (2, 3, 4):
        fit_preprocessed(splits, family, {"n_estimators": 10, "max_depth": depth}, auc, 0,
                         report=reports.append, report_every=5)
    refit = fit_model(data, family, {"n_estimators": 10, "max_depth": 3}, auc, 0, splits=splits)

    assert fits == [len(data.train.y)]
    assert len(reports) == 6 and all(r["valid_roc_auc"] > 0.5 for r in reports)
    # the refit pipeline takes raw columns through the one fitted preprocessor
    assert refit.pipeline.named_steps["preprocess"] is splits.preprocessor
    assert refit.pipeline.predict_proba(data.holdout.X).shape == (len(data.holdout.y), 2)
    # the same result as fitting everything from the raw splits
    alone = fit_model(data, family, {"n_estimators": 10, "max_depth": 3}, auc, 0)
    assert alone.valid_score == refit.valid_score


def test_splits_of_another_variant_are_refused(data):
    splits = preprocess(data, get_family("xgboost"))
    with pytest.raises(ValueError, match="linear: needs the preprocessing with scale_numeric"):
        fit_preprocessed(splits, get_family("linear"), {}, METRICS["roc_auc"], 0)
