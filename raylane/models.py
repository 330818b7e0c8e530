"""Model families: the estimator for each (family, task), with raylane's preprocessing in front.

Preprocessing is part of the model: a fitted ``Pipeline(preprocess, model)`` takes raw columns, so
the exported ONNX graph does too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier, XGBRegressor

from raylane.schema import FeatureSchema, Task


@dataclass(frozen=True)
class Family:
    """How raylane builds and grows one model family."""

    name: str
    estimators: dict[str, type[BaseEstimator]]  # task -> estimator class
    scale_numeric: bool = False
    # Name of the parameter that counts boosting rounds / trees, for families trained in steps
    # (so Tune's ASHA can stop weak trials early). None: trained in one go.
    steps_param: str | None = None
    seed_param: str | None = "random_state"
    defaults: Callable[[Task], dict[str, Any]] = lambda task: {}


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "xgboost",
            {"classification": XGBClassifier, "regression": XGBRegressor},
            steps_param="n_estimators",
            defaults=lambda task: {"tree_method": "hist", "n_jobs": 1, "n_estimators": 200},
        ),
        Family(
            "random_forest",
            {"classification": RandomForestClassifier, "regression": RandomForestRegressor},
            steps_param="n_estimators",
            defaults=lambda task: {"n_estimators": 100, "n_jobs": 1},
        ),
        Family(
            "hist_gradient_boosting",
            {
                "classification": HistGradientBoostingClassifier,
                "regression": HistGradientBoostingRegressor,
            },
            steps_param="max_iter",
            defaults=lambda task: {"max_iter": 200, "early_stopping": False},
        ),
        Family(
            "linear",
            {"classification": LogisticRegression, "regression": Ridge},
            scale_numeric=True,
            defaults=lambda task: {"max_iter": 2000} if task == "classification" else {},
        ),
    ]
}
FAMILY_ALIASES = {"logistic_regression": "linear", "ridge": "linear"}


def get_family(name: str) -> Family:
    """The family called ``name`` (aliases allowed)."""
    key = FAMILY_ALIASES.get(name, name)
    if key not in FAMILIES:
        raise KeyError(name)
    return FAMILIES[key]


def estimator_params(family: Family, task: Task) -> set[str]:
    """The hyperparameters an estimator of this family and task accepts."""
    return set(family.estimators[task]().get_params())


def build_estimator(family: Family, task: Task, params: dict[str, Any], seed: int) -> BaseEstimator:
    """An unfitted estimator with the family defaults, then ``params`` on top."""
    merged = {**family.defaults(task), **params}
    cls = family.estimators[task]
    if family.seed_param and family.seed_param in cls().get_params():
        merged.setdefault(family.seed_param, seed)
    if cls is XGBClassifier and merged.get("n_estimators") is not None:
        merged.setdefault("eval_metric", "logloss")
    return cls(**merged)


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
