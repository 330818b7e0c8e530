"""The preprocessing every family shares, and the pipeline it forms with the model.

Preprocessing is part of the model: a fitted ``Pipeline(preprocess, model)`` takes raw columns, so
the exported ONNX graph does too.
"""

from __future__ import annotations

from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from raylane.model.schema import FeatureSchema


def build_preprocessor(schema: FeatureSchema, scale_numeric: bool) -> ColumnTransformer:
    """Impute numbers (median), one-hot encode categories; dense output.

    Dense matters: XGBoost reads absent entries of a sparse matrix as *missing*, while the ONNX
    graph feeds explicit zeros, so a sparse one-hot would break parity.
    """
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale_numeric:
        numeric_steps.append(("scale", StandardScaler()))
    transformers = []
    if schema.numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), schema.numeric))
    if schema.categorical:
        transformers.append(
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                schema.categorical,
            )
        )
    return ColumnTransformer(transformers, sparse_threshold=0.0, verbose_feature_names_out=True)


def build_pipeline(preprocessor: ColumnTransformer, estimator: BaseEstimator) -> Pipeline:
    """The exportable model: raw columns in, predictions out."""
    return Pipeline([("preprocess", preprocessor), ("model", estimator)])
