"""Live performance: logged predictions joined with labels that arrived later, on
``prediction_id``, scored with the training job's metrics and compared with the holdout figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from raylane.data.read import DataError
from raylane.data.tables import read_tables
from raylane.model.metrics import DEFAULT_METRIC, METRICS, evaluate_all
from raylane.model.schema import FeatureSchema

ID, LABEL = "prediction_id", "label"


def read_labels(spec: str, target: str | None = None) -> pd.DataFrame:
    """Labels that arrived for logged predictions: every CSV/Parquet table under ``spec`` (a
    path, directory, glob or fsspec URI) with ``prediction_id`` and ``label`` (or the target's
    own column name); ids are read as strings, the last label of an id wins."""
    frame = read_tables(spec, "--labels", dtype={ID: str})
    if LABEL not in frame.columns and target is not None and target in frame.columns:
        frame = frame.rename(columns={target: LABEL})
    missing = {ID, LABEL} - set(frame.columns)
    if missing:
        raise DataError(f"--labels {spec}: missing columns {sorted(missing)} (expected {ID!r} "
                        f"and {LABEL!r}" + (f" or {target!r}" if target else "") + ")")
    frame = frame[[ID, LABEL]].dropna()
    frame[ID] = frame[ID].astype(str)
    return frame.drop_duplicates(ID, keep="last")


def live_performance(
    window: pa.Table, labels: pd.DataFrame, schema: FeatureSchema, holdout: dict[str, float], *,
    metric: str | None, tolerance: float, min_rows: int,
) -> dict:
    """Metrics on the labelled rows of ``window`` and whether ``metric`` fell below the holdout
    figure by more than ``tolerance`` (in the metric's own direction)."""
    name = metric or DEFAULT_METRIC[schema.task]
    out: dict = {"metric": name, "labelled_rows": 0, "tolerance": tolerance,
                 "holdout": holdout, "degraded": False}
    if ID not in window.column_names:
        out["note"] = "the prediction log has no prediction_id column: labels cannot be joined"
        return out
    ids = window.column(ID).to_numpy(zero_copy_only=False).astype(object)
    joined = pd.DataFrame({ID: ids, "_row": np.arange(len(ids))}).merge(labels, on=ID)
    if schema.task == "classification":
        index = {label: i for i, label in enumerate(schema.class_labels or [])}
        y = joined[LABEL].astype(str).map(index)
        out["unknown_labels"] = int(y.isna().sum())
        joined, y = joined[y.notna()], y[y.notna()].to_numpy(dtype=np.int64)
        probs = window.column("probabilities").combine_chunks()
        width = probs.type.list_size
        flat = probs.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        output = flat[joined["_row"].to_numpy()]
    else:
        y = joined[LABEL].to_numpy(dtype=np.float64)
        output = window.column("prediction").to_numpy(zero_copy_only=False)[joined["_row"]]
    out["labelled_rows"] = len(joined)
    if len(joined) < min_rows:
        out["note"] = f"{len(joined)} labelled rows, fewer than triggers.min_labelled_rows"
        return out
    live = evaluate_all(schema.task, y, output)
    out["live"] = live
    if name in live and name in holdout:
        m = METRICS[name]
        drop = holdout[name] - live[name] if m.mode == "max" else live[name] - holdout[name]
        out["drop"] = drop
        out["degraded"] = bool(drop > tolerance)
    return out
