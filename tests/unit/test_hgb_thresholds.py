"""HistGradientBoosting exports with split thresholds that send float32 inputs the way
scikit-learn does, even an input exactly at a threshold's nearest float32. No Ray."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raylane.data.read import encode_target, infer_schema, prepare_features
from raylane.model.families import get_family
from raylane.model.families.hist_gradient_boosting import float32_round_down
from raylane.model.onnx_model import OnnxModel
from raylane.model.preprocessing import build_pipeline, build_preprocessor
from raylane.release.export import to_onnx

# Trained on 0.8 and 0.9 (as float32), the one split is at their float64 midpoint 0.84999999...,
# whose nearest float32 is float32(0.85) = 0.85000002: above it. float32(0.85) itself is above
# the float64 threshold, so scikit-learn sends it right.
LOW, HIGH, AT = np.float32(0.8), np.float32(0.9), np.float32(0.85)


def fitted_pipeline(task: str):
    carat = np.repeat([LOW, HIGH], 10)
    target = np.repeat(["small", "large"] if task == "classification" else [100.0, 900.0], 10)
    frame = pd.DataFrame({"carat": carat, "price": target})
    schema = infer_schema(frame, "price", task)
    family = get_family("hist_gradient_boosting")
    model = family.build_estimator(task, {"max_iter": 1, "min_samples_leaf": 5}, seed=0)
    pipeline = build_pipeline(build_preprocessor(schema, family.scale_numeric), model)
    pipeline.fit(prepare_features(frame, schema), encode_target(frame["price"], schema))
    return pipeline, schema


def split_thresholds(model) -> np.ndarray:
    return np.concatenate([
        p.nodes["num_threshold"][~p.nodes["is_leaf"].astype(bool)]
        for iteration in model._predictors for p in iteration
    ])


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_input_at_a_threshold_rounded_up_goes_the_sklearn_way(task):
    pipeline, schema = fitted_pipeline(task)
    model = pipeline.steps[-1][1]
    thresholds = split_thresholds(model)
    # the case this test is about: one split, whose nearest float32 is the input and above it
    assert thresholds.size == 1
    threshold = thresholds[0]
    assert threshold < AT and np.float32(threshold) == AT

    rows = pd.DataFrame({"carat": [LOW, AT, HIGH]})
    onnx_model = OnnxModel(to_onnx(pipeline, schema), schema)
    prediction = onnx_model.predict_frame(rows)
    if task == "regression":
        native = pipeline.predict(rows)
        assert native[1] == native[2] != native[0]  # AT goes right, with HIGH
        np.testing.assert_allclose(prediction.values, native, rtol=1e-5)
    else:
        native = pipeline.predict_proba(rows)
        assert native[1].argmax() == native[2].argmax() != native[0].argmax()
        np.testing.assert_allclose(prediction.probabilities, native, atol=1e-5)
        np.testing.assert_array_equal(prediction.labels, native.argmax(axis=1))
    # the export worked on a copy: the user's model keeps its float64 threshold
    np.testing.assert_array_equal(split_thresholds(model), thresholds)


def test_float32_round_down_is_the_largest_float32_not_above():
    values = np.array([0.8499999940395355, 0.85, 1.5, 1e39, -1e39, np.inf, -np.inf, 5e-46])
    down = float32_round_down(values)
    assert np.all(down.astype(np.float32).astype(np.float64) == down)  # float32 values
    assert np.all(down <= values)
    with np.errstate(over="ignore"):  # the step above float32's max is inf
        up = np.nextafter(down.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    assert np.all((up > values) | np.isinf(values) | (down == np.finfo(np.float32).max))
    assert down[2] == 1.5 and down[3] == np.finfo(np.float32).max and down[4] == -np.inf
    assert np.isnan(float32_round_down(np.array([np.nan])))[0]
