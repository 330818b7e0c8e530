"""Monitoring runs in MLflow: one run per report in the monitoring experiment, its metrics keyed
by the window's end time (MLflow's step) so charts show drift over time."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from mlflow import MlflowClient

from raylane.config import PipelineConfig
from raylane.model.tags import (
    MONITOR_DECISION,
    MONITOR_DRIFTED_COLUMNS,
    MONITOR_LAST_RUN_ID,
    MONITOR_MODEL_NAME,
    MONITOR_MODEL_URI,
    MONITOR_MODEL_VERSION,
    MONITOR_SINCE,
    MONITOR_UNTIL,
    REFERENCE,
)
from raylane.monitoring import charts, distributions
from raylane.monitoring.drift import DatasetDrift
from raylane.monitoring.report import RETRAIN, MonitorReport
from raylane.tracking.runs import RunLog

TAG_MODEL, TAG_VERSION = MONITOR_MODEL_NAME, MONITOR_MODEL_VERSION
TAG_UNTIL, TAG_SINCE = MONITOR_UNTIL, MONITOR_SINCE
TAG_DECISION, TAG_REFERENCE = MONITOR_DECISION, REFERENCE
VERSION_LAST_RUN_TAG = MONITOR_LAST_RUN_ID


def experiment_name(config: PipelineConfig) -> str:
    return config.monitoring.experiment or f"{config.mlflow.experiment}-monitoring"


def last_report_end(client: MlflowClient, experiment_id: str, model_name: str) -> datetime | None:
    """Where the last finished report on ``model_name`` ended its window, if any."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_MODEL}` = '{model_name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=20,
    )
    ends = [datetime.fromisoformat(r.data.tags[TAG_UNTIL]) for r in runs
            if r.data.tags.get(TAG_UNTIL)]
    return max(ends) if ends else None


def _key(name: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", name)


def log_report(client: MlflowClient, run_id: str, report: MonitorReport, until: datetime,
               drift: DatasetDrift | None) -> None:
    """Metrics (step = the window's end in unix seconds), tags linking the model version and
    its reference, the figures and ``report.json``."""
    run = RunLog(client, run_id)
    body = report.to_dict()
    step = int(until.astimezone(UTC).timestamp())
    metrics = {"rows": body["rows"], "drift_share": body["drift_share"],
               "dataset_drift": float(body["dataset_drift"]),
               "drifted_columns": len(body["drifted_columns"]),
               "decision_retrain": float(report.decision == RETRAIN)}
    for name, col in body["columns"].items():
        if col["score"] is not None:
            metrics[f"drift.{_key(name)}.score"] = col["score"]
            metrics[f"drift.{_key(name)}.drifted"] = float(col["drift"])
        if col["psi"] is not None:
            metrics[f"psi.{_key(name)}"] = col["psi"]
        metrics[f"missing.{_key(name)}"] = col["missing"]["current"]
    pred = body.get("prediction") or {}
    if pred.get("score") is not None:
        metrics["prediction.score"] = pred["score"]
        metrics["prediction.drifted"] = float(pred["drift"])
    perf = body.get("performance") or {}
    metrics["labelled_rows"] = perf.get("labelled_rows", 0)
    for name, value in (perf.get("live") or {}).items():
        metrics[f"live.{name}"] = value
    run.metrics({k: v for k, v in metrics.items() if v is not None}, step=step)
    model = body["model"]
    window = body["window"]
    run.tags({TAG_MODEL: model["name"], TAG_VERSION: model["version"],
              MONITOR_MODEL_URI: model["uri"], TAG_REFERENCE: model["reference"],
              TAG_SINCE: window["since"] or "", TAG_UNTIL: window["until"],
              TAG_DECISION: report.decision,
              MONITOR_DRIFTED_COLUMNS: ",".join(body["drifted_columns"]) or "none"})
    run.json(body, "monitoring/report.json")
    if drift is not None and drift.samples:  # any column's reference vs current, for the console
        kinds = {c.name: c.kind for c in drift.columns}
        run.json(distributions.shares({n: (kinds[n], *s) for n, s in drift.samples.items()
                                       if n in kinds}), "monitoring/distributions.json")
    if drift is not None and drift.columns:
        run.figure(charts.drift_scores(drift.columns), "drift_scores")
        drifted = {n: (c.kind, *drift.samples[n]) for n in drift.drifted_columns
                   for c in drift.columns if c.name == n}
        if drifted:
            run.figure(charts.distributions(drifted), "drifted_distributions")
    client.set_model_version_tag(model["name"], model["version"], VERSION_LAST_RUN_TAG, run_id)
