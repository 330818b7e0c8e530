"""A version's reference profile: a bounded sample of its training rows, the graph's predictions
on them and per-column summaries, stored with the registered version.

At registration (:func:`attach_profile`, called by :func:`raylane.release.publish.publish`) the
sample
and summaries are logged to the version's run under ``monitoring/reference/`` and the version gets
the tag ``raylane.reference`` pointing to them, so monitoring needs only the registry and the
prediction log, not the training files.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from raylane.data.read import Split
from raylane.model.metrics import evaluate_all
from raylane.model.onnx_model import OnnxModel, Prediction
from raylane.model.schema import MISSING_CATEGORY, FeatureSchema
from raylane.model.tags import REFERENCE

REFERENCE_TAG = REFERENCE
ARTIFACT_DIR = "monitoring/reference"
SAMPLE_FILE, PREDICTIONS_FILE, SUMMARY_FILE = "sample.parquet", "predictions.parquet", \
    "profile.json"
QUANTILES = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


class ProfileNotFoundError(LookupError):
    """The version has no reference profile (registered before profiles existed, or by hand)."""


def reference_sample(split: Split, rows: int, seed: int) -> pd.DataFrame:
    """Up to ``rows`` training rows, drawn with ``seed``; stratified by class when ``split.y``
    holds class indices (each class keeps its share)."""
    n = len(split.X)
    if n <= rows:
        return split.X.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    y = np.asarray(split.y)
    if y.dtype.kind in "iu":
        picks = []
        for cls in np.unique(y):
            members = np.flatnonzero(y == cls)
            take = max(1, round(rows * len(members) / n))
            picks.append(rng.choice(members, min(take, len(members)), replace=False))
        idx = np.sort(np.concatenate(picks))[:rows]
    else:
        idx = np.sort(rng.choice(n, rows, replace=False))
    return split.X.iloc[idx].reset_index(drop=True)


def prediction_columns(schema: FeatureSchema, pred: Prediction) -> dict[str, np.ndarray]:
    """The graph's output as the prediction log stores it: ``prediction`` (label or value) and,
    for classifiers, ``probabilities`` ([N, K])."""
    if schema.task == "regression":
        return {"prediction": np.asarray(pred.values, dtype=np.float64)}
    labels = np.asarray(schema.class_labels or [], dtype=object)
    return {"prediction": labels[np.asarray(pred.labels)],
            "probabilities": np.asarray(pred.probabilities, dtype=np.float64)}


def summarize(frame: pd.DataFrame, schema: FeatureSchema) -> dict:
    """Per-column summaries: missing rate, quantiles / mean / std / histogram for numbers,
    shares for categories."""
    columns = {}
    for col in schema.columns:
        series = frame[col.name]
        if col.kind == "numeric":
            values = series.to_numpy(dtype=np.float64)
            finite = values[np.isfinite(values)]
            entry = {"kind": "numeric", "missing_rate": 1 - len(finite) / max(len(values), 1)}
            if len(finite):
                counts, edges = np.histogram(finite, bins="sturges")
                entry |= {"mean": float(finite.mean()), "std": float(finite.std()),
                          "quantiles": dict(zip(map(str, QUANTILES),
                                                np.quantile(finite, QUANTILES).tolist(),
                                                strict=True)),
                          "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}
        else:
            present = series[series.astype(str) != MISSING_CATEGORY].astype(str)
            entry = {"kind": "categorical", "missing_rate": 1 - len(present) / max(len(series), 1),
                     "frequencies": present.value_counts(normalize=True).to_dict(),
                     "training_categories": col.categories or []}
        columns[col.name] = entry
    return columns


def _prediction_summary(pred: dict[str, np.ndarray]) -> dict:
    p = pred["prediction"]
    if p.dtype.kind == "f":
        return {"kind": "numeric", "mean": float(p.mean()), "std": float(p.std()),
                "quantiles": dict(zip(map(str, QUANTILES), np.quantile(p, QUANTILES).tolist(),
                                      strict=True))}
    return {"kind": "categorical",
            "frequencies": pd.Series(p).value_counts(normalize=True).to_dict()}


def attach_profile(
    client: MlflowClient, version: ModelVersion, run_id: str, sample: pd.DataFrame,
    model: OnnxModel, holdout: Split | None = None,
) -> str:
    """Log ``sample`` (training rows), the graph's predictions on it and their summaries to run
    ``run_id`` under ``monitoring/reference/``, with the holdout metrics of the graph itself, and
    tag ``version`` with where they are. Returns that artifact URI."""
    schema = model.schema
    sample = sample[schema.feature_names].reset_index(drop=True)
    pred = prediction_columns(schema, model.predict_frame(sample))
    summary = {
        "model_name": version.name, "model_version": str(version.version), "run_id": run_id,
        "rows": len(sample), "task": schema.task, "class_labels": schema.class_labels,
        "columns": summarize(sample, schema), "prediction": _prediction_summary(pred),
    }
    if holdout is not None:
        out = model.predict_frame(holdout.X[schema.feature_names])
        output = out.probabilities if schema.task == "classification" else out.values
        summary["holdout_metrics"] = evaluate_all(schema.task, holdout.y, output)
        summary["holdout_rows"] = len(holdout.y)
    with tempfile.TemporaryDirectory(prefix="raylane-reference-") as tmp:
        folder = Path(tmp)
        pq.write_table(pa.Table.from_pandas(sample, preserve_index=False), folder / SAMPLE_FILE)
        pq.write_table(_prediction_table(pred), folder / PREDICTIONS_FILE)
        (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str))
        for name in (SAMPLE_FILE, PREDICTIONS_FILE, SUMMARY_FILE):
            client.log_artifact(run_id, str(folder / name), artifact_path=ARTIFACT_DIR)
    uri = f"runs:/{run_id}/{ARTIFACT_DIR}"
    client.set_model_version_tag(version.name, version.version, REFERENCE_TAG, uri)
    return uri


def _prediction_table(pred: dict[str, np.ndarray]) -> pa.Table:
    columns = {"prediction": pa.array(pred["prediction"].tolist())}
    if "probabilities" in pred:
        probs = pred["probabilities"]
        columns["probabilities"] = pa.FixedSizeListArray.from_arrays(
            pa.array(probs.reshape(-1)), probs.shape[1])
    return pa.table(columns)


@dataclass
class Profile:
    """A loaded reference profile."""

    uri: str
    sample: pa.Table
    predictions: pa.Table
    summary: dict

    @property
    def holdout_metrics(self) -> dict[str, float]:
        return self.summary.get("holdout_metrics") or {}


def load_profile(client: MlflowClient, version: ModelVersion) -> Profile:
    """The reference profile the version's tag points to."""
    uri = (version.tags or {}).get(REFERENCE_TAG)
    if not uri:
        raise ProfileNotFoundError(
            f"model {version.name} version {version.version} has no reference profile (tag "
            f"{REFERENCE_TAG!r}); register it with the training job of this release")
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    with tempfile.TemporaryDirectory(prefix="raylane-reference-") as tmp:
        local = Path(client.download_artifacts(run_id, path, tmp))
        return Profile(uri, pq.read_table(local / SAMPLE_FILE),
                       pq.read_table(local / PREDICTIONS_FILE),
                       json.loads((local / SUMMARY_FILE).read_text()))
