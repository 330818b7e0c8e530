"""A tiny real ONNX classifier (skl2onnx on a few rows) for the serving unit tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import ColumnSpec, FeatureSchema
from raylane.model.store import RegisteredModel
from raylane.serving.predictor import LoadedModel

SCHEMA = FeatureSchema(
    task="classification", target="y", class_labels=["bad", "good"],
    columns=[
        ColumnSpec(name="age", kind="numeric", dtype="float64"),
        ColumnSpec(name="income", kind="numeric", dtype="float64"),
        ColumnSpec(name="home", kind="categorical", dtype="object", categories=["own", "rent"]),
    ],
)
ROWS = pd.DataFrame({
    "age": [22.0, 35.0, 47.0, 51.0, 29.0, 63.0, 40.0, 33.0],
    "income": [10.0, 80.0, 55.0, 120.0, 15.0, 95.0, 60.0, 20.0],
    "home": ["rent", "own", "own", "own", "rent", "own", "rent", "rent"],
})
LABELS = np.array([0, 1, 1, 1, 0, 1, 1, 0])


def tiny_onnx() -> bytes:
    """Logistic regression on ``ROWS``: inputs one ``[N, 1]`` tensor per column, as raylane's."""
    prep = ColumnTransformer([
        ("num", SimpleImputer(), ["age", "income"]),
        ("cat", OneHotEncoder(handle_unknown="ignore"), ["home"]),
    ])
    pipeline = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(ROWS, LABELS)
    types = [("age", FloatTensorType([None, 1])), ("income", FloatTensorType([None, 1])),
             ("home", StringTensorType([None, 1]))]
    model = pipeline.steps[-1][1]
    onx = convert_sklearn(pipeline, initial_types=types, options={id(model): {"zipmap": False}},
                          target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()


def registered(version: str, onnx_bytes: bytes, name: str = "credit") -> RegisteredModel:
    return RegisteredModel(name=name, version=version, alias="champion", run_id="run",
                           onnx_bytes=onnx_bytes, schema=SCHEMA, metadata={})


def loaded(version: str = "1", onnx_bytes: bytes | None = None) -> LoadedModel:
    reg = registered(version, onnx_bytes or tiny_onnx())
    return LoadedModel(registered=reg, onnx=OnnxModel(reg.onnx_bytes, SCHEMA),
                       uri="models:/credit@champion")
