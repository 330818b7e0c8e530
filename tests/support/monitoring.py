"""Two real monitoring runs of a published model, as ``ray_jobs.monitor`` makes them: the monitor
(in its own process, the logs being small; Ray Data past 32 MiB) reads a prediction log written
by the service's own writer, once of held-out rows with their labels (no drift, live metrics)
and once with ``Amount`` scaled by 1.5."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from raylane.config import load_config
from raylane.model.onnx_model import OnnxModel
from raylane.monitoring import run_monitor
from raylane.monitoring.report import MonitorReport
from raylane.serving.prediction_log import PredictionLog
from support.serving import ROOT, Trained


def write_log(directory: Path, model_name: str, trained: Trained, model: OnnxModel,
              X: pd.DataFrame) -> pd.DataFrame:
    """The service's writer logging ``X`` as answered; the logged rows (with their ids)."""
    plog = PredictionLog(str(directory), sample_rate=1.0)
    plog.record(model_name, "1", trained.schema, model.feeds_from_frame(X), len(X),
                model.predict_frame(X))
    assert plog.flush()
    return pd.read_parquet(directory)


def monitoring_history(tmp: Path, tracking_uri: str, model_name: str, experiment: str,
                       trained: Trained, onnx_bytes: bytes) -> tuple[MonitorReport, MonitorReport]:
    """The clean (labelled) window's report, then the shifted one's."""
    model = OnnxModel(onnx_bytes, trained.schema)
    start = datetime.now(UTC) - timedelta(minutes=1)
    X = trained.data.holdout.X.reset_index(drop=True)
    clean = write_log(tmp / "clean", model_name, trained, model, X)
    write_log(tmp / "drift", model_name, trained, model,
              X.assign(Amount=(X["Amount"] * 1.5).round()))
    labels = tmp / "labels.csv"
    classes = trained.schema.class_labels
    pd.DataFrame({"prediction_id": clean["prediction_id"],
                  "label": [classes[i] for i in trained.data.holdout.y]}).to_csv(labels,
                                                                                  index=False)
    config = load_config(ROOT / "tune_configs" / "credit_xgboost.yaml", [
        f"mlflow.tracking_uri={tracking_uri}", f"mlflow.registered_model={model_name}",
        f"mlflow.experiment={experiment}", "monitoring.triggers.min_rows=100",
        "monitoring.triggers.min_labelled_rows=50"])
    first = run_monitor(config, str(tmp / "clean"), labels=str(labels), since=start)
    second = run_monitor(config, str(tmp / "drift"), since=start)
    return first, second
