"""Figures logged to MLflow: search progress, curves, importance, confusion, ROC, residuals."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.inspection import permutation_importance
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay
from sklearn.pipeline import Pipeline

from raylane.data.read import PreparedData
from raylane.model.metrics import Metric


def search_progress(trials: pd.DataFrame, metric: Metric, time_col: str = "time_total_s") -> Figure:
    """Each trial's final validation score in completion order, with the best so far."""
    col = f"valid_{metric.name}"
    fig, ax = plt.subplots(figsize=(7, 4))
    ordered = trials.reset_index(drop=True)
    if "trial_id" in ordered:
        ordered = ordered.sort_values("trial_id").reset_index(drop=True)
    scores = ordered[col].to_numpy(dtype=float)
    best = np.maximum.accumulate(scores) if metric.mode == "max" else np.minimum.accumulate(scores)
    ax.scatter(np.arange(1, len(scores) + 1), scores, s=18, label="trial (last report)")
    ax.step(np.arange(1, len(scores) + 1), best, where="post", color="C3", label="best so far")
    ax.set(xlabel="trial", ylabel=col, title="Search progress")
    ax.legend()
    fig.tight_layout()
    return fig


def learning_curves(histories: dict[str, pd.DataFrame], metric: Metric) -> Figure:
    """Validation score against boosting rounds/trees, one line per trial (ASHA stops show)."""
    col = f"valid_{metric.name}"
    fig, ax = plt.subplots(figsize=(7, 4))
    for df in histories.values():
        if col in df and "steps" in df:
            ax.plot(df["steps"], df[col], alpha=0.6, lw=1)
    ax.set(xlabel="steps (rounds / trees)", ylabel=col, title="Tuning curves per trial")
    fig.tight_layout()
    return fig


def feature_importance(
    pipeline: Pipeline, data: PreparedData, metric: Metric, seed: int, max_rows: int = 2000
) -> tuple[Figure, pd.Series]:
    """Permutation importance of each *raw* column on the holdout (model-agnostic)."""
    X, y = data.holdout.X, data.holdout.y
    if len(X) > max_rows:
        idx = np.random.default_rng(seed).choice(len(X), max_rows, replace=False)
        X, y = X.iloc[idx], y[idx]
    scoring = "neg_root_mean_squared_error" if metric.task == "regression" else "accuracy"
    result = permutation_importance(pipeline, X, y, scoring=scoring, n_repeats=3, random_state=seed)
    series = pd.Series(result.importances_mean, index=X.columns).sort_values()
    fig, ax = plt.subplots(figsize=(7, max(3, 0.3 * len(series))))
    ax.barh(series.index, series.to_numpy())
    ax.set(xlabel=f"drop in {scoring} when shuffled", title="Permutation importance (holdout)")
    fig.tight_layout()
    return fig, series


def confusion_matrix(pipeline: Pipeline, data: PreparedData) -> Figure:
    labels = data.schema.class_labels or []
    predicted = pipeline.predict(data.holdout.X)
    fig, ax = plt.subplots(figsize=(5, 4))
    ConfusionMatrixDisplay.from_predictions(
        data.holdout.y, predicted, labels=np.arange(len(labels)), display_labels=labels, ax=ax,
        colorbar=False,
    )
    ax.set_title("Confusion matrix (holdout)")
    fig.tight_layout()
    return fig


def roc_curve(pipeline: Pipeline, data: PreparedData) -> Figure:
    """ROC of the positive class (binary) or of each class against the rest."""
    labels = data.schema.class_labels or []
    proba = pipeline.predict_proba(data.holdout.X)
    fig, ax = plt.subplots(figsize=(5, 4))
    classes = [1] if len(labels) == 2 else range(len(labels))
    for k in classes:
        RocCurveDisplay.from_predictions(
            data.holdout.y == k, proba[:, k], name=str(labels[k]), ax=ax
        )
    ax.set_title("ROC (holdout)")
    fig.tight_layout()
    return fig


def residuals(pipeline: Pipeline, data: PreparedData) -> Figure:
    predicted = pipeline.predict(data.holdout.X)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.scatter(predicted, data.holdout.y - predicted, s=4, alpha=0.3)
    left.axhline(0, color="C3")
    left.set(xlabel="predicted", ylabel="residual", title="Residuals (holdout)")
    right.scatter(data.holdout.y, predicted, s=4, alpha=0.3)
    lo, hi = float(np.min(data.holdout.y)), float(np.max(data.holdout.y))
    right.plot([lo, hi], [lo, hi], color="C3")
    right.set(xlabel="actual", ylabel="predicted", title="Predicted vs actual (holdout)")
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
