"""ONNX export reproduces the native pipeline for every family and task, from raw columns."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.numpy_helper
import pandas as pd
import pytest
from conftest import CREDIT_CSV, DIAMONDS_CSV

from raylane.data.read import infer_schema, read_table, split_data
from raylane.model.families import FAMILIES, get_family
from raylane.model.metrics import METRICS
from raylane.model.onnx_model import OnnxModel, UnsafeModelError
from raylane.release.export import check_parity, to_onnx
from raylane.training.fit import fit_model

SMALL = {
    "xgboost": {"n_estimators": 30, "max_depth": 4},
    "random_forest": {"n_estimators": 20, "max_depth": 8},
    "hist_gradient_boosting": {"max_iter": 30},
    "linear": {},
}


@pytest.fixture(scope="module")
def datasets():
    credit = read_table(str(CREDIT_CSV))
    diamonds = read_table(str(DIAMONDS_CSV)).sample(3000, random_state=0)
    out = {}
    for name, frame, target in (("classification", credit, "Status"),
                                ("regression", diamonds, "price")):
        schema = infer_schema(frame, target, None)
        out[name] = split_data(frame, schema, 0.2, 0.2, seed=0, source=name)
    return out


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnx_parity_every_family_and_task(datasets, family, task):
    data = datasets[task]
    assert data.schema.task == task
    metric = METRICS["roc_auc" if task == "classification" else "rmse"]
    fit = fit_model(data, get_family(family), SMALL[family], metric, seed=0,
                    report=lambda _: None, report_every=10)
    model = OnnxModel(to_onnx(fit.pipeline, data.schema), data.schema)
    # one input per raw column: numbers as float, categories as strings
    inputs = {i.name: i.type for i in model.session.get_inputs()}
    assert set(inputs) == set(data.schema.feature_names)
    for col in data.schema.columns:
        assert inputs[col.name] == ("tensor(float)" if col.kind == "numeric" else "tensor(string)")
    report = check_parity(fit.pipeline, model, data.holdout.X)
    assert report.passed, report
    assert report.mismatched_rows == 0
    if task == "classification":
        assert report.label_agreement == 1.0


def test_missing_values_and_unseen_categories_are_handled(datasets):
    data = datasets["classification"]
    fit = fit_model(data, get_family("xgboost"), SMALL["xgboost"], METRICS["roc_auc"], seed=0)
    model = OnnxModel(to_onnx(fit.pipeline, data.schema), data.schema)
    rows = data.holdout.X.head(4).copy()
    rows.loc[rows.index[0], "Income"] = np.nan
    rows.loc[rows.index[1], "Home"] = "castle"  # never seen in training
    rows.loc[rows.index[2], "Job"] = ""  # a missing category
    prediction = model.predict_frame(rows)
    native = fit.pipeline.predict_proba(rows)
    np.testing.assert_allclose(prediction.probabilities, native, atol=1e-5)


def test_zero_tolerance_parity_fails_on_float32_rounding(datasets):
    """The check can fail: float32 graph arithmetic differs from float64 in the last bits."""
    data = datasets["regression"]
    fit = fit_model(data, get_family("linear"), {}, METRICS["rmse"], seed=0)
    model = OnnxModel(to_onnx(fit.pipeline, data.schema), data.schema)
    report = check_parity(fit.pipeline, model, data.holdout.X, atol=0, rtol=0,
                          max_mismatch_fraction=0)
    assert not report.passed and report.mismatched_rows > 0


def test_graphs_with_external_data_are_refused(datasets, tmp_path):
    data = datasets["regression"]
    fit = fit_model(data, get_family("linear"), {}, METRICS["rmse"], seed=0)
    proto = onnx.load_model_from_string(to_onnx(fit.pipeline, data.schema))
    # tree and linear ops keep weights in attributes; add a tensor so there is data to move out
    proto.graph.initializer.append(
        onnx.numpy_helper.from_array(np.ones(256, dtype=np.float32), name="weights")
    )
    onnx.save_model(proto, tmp_path / "m.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    with pytest.raises(UnsafeModelError, match="external data"):
        OnnxModel((tmp_path / "m.onnx").read_bytes(), data.schema)


def test_schema_records_categories_and_labels(datasets):
    schema = datasets["classification"].schema
    assert schema.class_labels == ["bad", "good"]
    home = schema.column("Home")
    assert home.kind == "categorical" and "rent" in home.categories
    assert schema.column("Income").kind == "numeric" and schema.column("Income").nullable
    assert isinstance(datasets["classification"].holdout.X, pd.DataFrame)
