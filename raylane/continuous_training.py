"""Continuous training: monitor -> decide -> retrain -> judge fairly -> roll out.

One CT run (MLflow experiment ``<experiment>-ct``) records what triggered it (the monitor's
decision and report, or ``--force``), the rows it added, the training run and model version it
produced, and the judged decision. Tags link every step both ways, so a user can walk from a
promotion back to the traffic that caused it::

    model version  --raylane.ct.run_id-->        CT run
    CT run         --raylane.monitoring.run_id--> monitoring run (the drift report)
    CT run         --raylane.training_run_id-->   training parent run --> model version
    monitoring run --raylane.ct.run_id-->         CT run
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow.parquet as pq

from raylane import stops, tracking
from raylane.config import PipelineConfig
from raylane.data import DataError

log = logging.getLogger(__name__)
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")
PREDICTION_ID = "prediction_id"
RESULT_MARKER = "raylane-ct-result: "


@dataclass
class CTResult:
    """What one continuous-training run did."""

    run_id: str
    experiment: str
    trigger: str  # "forced" or "monitor"
    retrained: bool
    monitoring_run_id: str | None = None
    report: dict | None = None
    new_rows: int = 0
    training_run_id: str | None = None
    model_version: str | None = None
    promoted: bool = False
    reasons: list[str] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- reading rows


def table_files(spec: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The table files a path, glob, directory or URI (any fsspec filesystem) names."""
    fs, _, paths = fsspec.get_fs_token_paths(spec)
    files: list[str] = []
    for path in paths:
        if fs.isdir(path):
            files += [p for p in fs.find(path) if p.endswith(TABLE_SUFFIXES)]
        else:
            files.append(path)
    return fs, sorted(files)


def read_rows(spec: str, what: str = "--new-data") -> pd.DataFrame:
    """Every CSV/TSV/Parquet table under ``spec``, concatenated."""
    fs, files = table_files(spec)
    if not files:
        raise DataError(f"{what}: no .csv, .tsv or .parquet files at {spec!r}")
    frames = []
    for path in files:
        with fs.open(path, "rb") as f:
            if path.endswith((".parquet", ".pq")):
                frames.append(pq.read_table(f).to_pandas())
            else:
                frames.append(pd.read_csv(f, sep="\t" if path.endswith(".tsv") else ","))
    return pd.concat(frames, ignore_index=True)


def read_prediction_log(spec: str) -> pd.DataFrame:
    """The logged predictions as rows of raw input columns (``input.<col>`` -> ``<col>``), with
    ``prediction_id``, ``timestamp`` and the model version kept."""
    fs, files = table_files(spec)
    tables = []
    for path in files:
        with fs.open(path, "rb") as f:
            tables.append(pq.read_table(f).flatten().to_pandas())
    if not tables:
        raise DataError(f"--predictions: no prediction log files at {spec!r}")
    frame = pd.concat(tables, ignore_index=True)
    return frame.rename(columns={c: c.removeprefix("input.") for c in frame.columns})


def labelled_from_log(predictions: str, labels: str, config: PipelineConfig) -> pd.DataFrame:
    """Logged inputs joined on ``prediction_id`` with the labels that arrived for them.

    The labels table has ``prediction_id`` and the target column (or ``label``)."""
    target = config.data.target
    table = read_rows(labels, "--labels")
    if target not in table.columns and "label" in table.columns:
        table = table.rename(columns={"label": target})
    for column in (PREDICTION_ID, target):
        if column not in table.columns:
            raise DataError(f"--labels: needs columns {PREDICTION_ID!r} and {target!r} (or "
                            f"'label'); it has {list(table.columns)}")
    logged = read_prediction_log(predictions)
    if PREDICTION_ID not in logged.columns:
        raise DataError("--predictions: the log has no prediction_id column (logged by an "
                        "older server?); labels cannot be joined")
    logged = logged.drop(columns=[target], errors="ignore").drop_duplicates(PREDICTION_ID)
    joined = table[[PREDICTION_ID, target]].merge(logged, on=PREDICTION_ID, how="inner")
    log.info("labels: %d rows, %d joined to logged predictions", len(table), len(joined))
    return joined


def new_labelled_rows(config: PipelineConfig, new_data: str | None, predictions: str | None,
                      labels: str | None) -> pd.DataFrame:
    """``--new-data`` rows plus, with ``--labels``, the labelled logged predictions; only the
    columns of the reference data are kept (the pipeline's ``data.path``)."""
    frames = []
    if new_data:
        frames.append(read_rows(new_data))
    if labels:
        if not predictions:
            raise DataError("--labels needs --predictions (the log they are joined with)")
        frames.append(labelled_from_log(predictions, labels, config))
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    if config.data.target not in rows.columns:
        raise DataError(f"--new-data: the new rows have no target column "
                        f"{config.data.target!r}")
    return rows


# --------------------------------------------------------------------------- the run


def run_continuous_training(
    config: PipelineConfig,
    *,
    predictions: str | None = None,
    new_data: str | None = None,
    labels: str | None = None,
    force: bool = False,
    model_uri: str | None = None,
    since: str | None = None,
    until: str | None = None,
    report_path: str | None = None,
    monitoring_run_id: str | None = None,
    monitor_only: bool = False,
) -> CTResult:
    """Run the monitor (unless ``force``) and, when it says ``retrain``, the training pipeline
    on the config's data plus the new labelled rows; the challenger is judged fairly and
    promoted only if it wins.

    ``monitoring_run_id``: the monitor already ran (an orchestrator's earlier task) and said
    ``retrain``; link to its run instead of monitoring again. ``monitor_only``: stop after the
    monitor's decision (``retrained`` stays False; ``reasons`` say what it decided).
    """
    from raylane.pipeline import load_data, run_pipeline

    if not force and not predictions and not monitoring_run_id:
        raise DataError("--predictions is required unless --force")
    client = tracking.mlflow_client(config.tracking_uri)
    experiment = f"{config.mlflow.experiment}-ct"
    experiment_id = tracking.ensure_experiment(client, experiment)
    model_uri = model_uri or f"models:/{config.mlflow.registered_model}@champion"
    with tracking.parent_run(client, experiment_id, run_name="continuous-training") as run_id:
        stops.track_run(config.tracking_uri, run_id)
        run = tracking.RunLog(client, run_id)
        result = CTResult(run_id=run_id, experiment=experiment,
                          trigger="forced" if force else "monitor", retrained=False)
        run.tags({"raylane.role": "continuous-training", "raylane.ct.trigger": result.trigger,
                  "raylane.ct.model_uri": model_uri,
                  "raylane.registered_model": config.mlflow.registered_model})
        run.params({"predictions": predictions, "new_data": new_data, "labels": labels,
                    "force": force, "since": since, "until": until})
        if monitoring_run_id and not force:
            result.monitoring_run_id = monitoring_run_id
            run.tags({"raylane.monitoring.run_id": monitoring_run_id,
                      "raylane.monitoring.decision": "retrain"})
            client.set_tag(monitoring_run_id, "raylane.ct.run_id", run_id)
        elif not force:
            with stops.stage("monitoring"):
                report = _monitor(config, predictions, labels, model_uri, since, until,
                                  report_path)
            result.report, result.monitoring_run_id = report.to_dict(), report.run_id
            run.json(result.report, "monitoring/report.json")
            run.tags({"raylane.monitoring.run_id": report.run_id or "none",
                      "raylane.monitoring.decision": report.decision,
                      "raylane.monitoring.reasons": "; ".join(report.reasons)[:5000]})
            if report.run_id:
                client.set_tag(report.run_id, "raylane.ct.run_id", run_id)
            if report.decision != "retrain" or monitor_only:
                result.reasons = [f"monitor decided {report.decision!r}: "
                                  + ("; ".join(report.reasons) or "no drift")]
                run.tags({"raylane.ct.decision": "monitor only" if monitor_only
                          else "no retrain"})
                run.json(result.to_dict(), "ct/result.json")
                return result
        if monitor_only:  # forced: nothing to ask the monitor
            result.reasons = ["forced"]
            run.tags({"raylane.ct.decision": "monitor only"})
            return result
        with stops.stage("data load"):
            rows = new_labelled_rows(config, new_data, predictions, labels)
            result.new_rows = len(rows)
            loaded = load_data(config, rows if len(rows) else None)
            run.metrics({"new_rows": len(rows), "judging_rows": len(loaded[1].judge.y)})
            run.json(loaded[1].holdout_definition, "judging/holdout_definition.json")
        links = {"raylane.ct.run_id": run_id, "raylane.ct.trigger": result.trigger}
        if result.monitoring_run_id:
            links["raylane.monitoring.run_id"] = result.monitoring_run_id
        trained = run_pipeline(config, loaded=loaded, tags=links)
        result.retrained = True
        result.training_run_id, result.model_version = trained.run_id, trained.version
        result.promoted, result.reasons = trained.decision.promoted, trained.decision.reasons
        version = client.get_model_version(trained.model_name, trained.version)
        result.scores = {k: v for k, v in version.tags.items()
                         if k.startswith(("raylane.judging.", "raylane.holdout."))}
        run.tags({"raylane.training_run_id": trained.run_id,
                  "raylane.model_version": trained.version,
                  "raylane.model_uri": f"models:/{trained.model_name}/{trained.version}",
                  "raylane.ct.decision": "promoted" if result.promoted else "not promoted",
                  "raylane.decision.reasons": "; ".join(result.reasons)[:5000] or "won",
                  **result.scores})
        run.json(result.to_dict(), "ct/result.json")
        return result


def _monitor(config, predictions, labels, model_uri, since, until, report_path):
    try:
        from raylane.monitoring import run_monitor
    except ImportError as exc:  # pragma: no cover - until the monitoring package is merged
        raise DataError("raylane.monitoring is not available; use --force to retrain "
                        "without monitoring") from exc
    since, until = (datetime.fromisoformat(t) if isinstance(t, str) else t
                    for t in (since, until))
    if report_path is None:
        report_path = str(Path(tempfile.mkdtemp(prefix="raylane-ct-")) / "drift.json")
    return run_monitor(config, predictions, labels=labels, model_uri=model_uri, since=since,
                       until=until, report_path=report_path)


def render(result: CTResult) -> str:
    """The lines the job prints at the end."""
    lines = ["", "=" * 72, "Raylane continuous training", "=" * 72,
             f"  trigger          {result.trigger}"]
    if result.report is not None:
        lines.append(f"  monitor          decision {result.report.get('decision')!r}, "
                     f"run {result.monitoring_run_id}")
        lines.append("  drift report     " + json.dumps(
            {k: result.report.get(k) for k in ("rows", "dataset_drift", "drift_share",
                                                "drifted_columns", "reasons")}, default=str))
    if result.retrained:
        lines += [f"  new rows         {result.new_rows}",
                  f"  training run     {result.training_run_id}",
                  f"  model version    {result.model_version}",
                  f"  judged on        {result.scores.get('raylane.judging.rows')} rows: "
                  f"challenger {result.scores.get('raylane.judging.challenger')} vs champion "
                  f"{result.scores.get('raylane.judging.champion')} "
                  f"({result.scores.get('raylane.judging.metric')})",
                  f"  decision         {'promoted' if result.promoted else 'not promoted'}"]
    else:
        lines.append("  decision         "
                     + ("retrain" if result.trigger == "forced" or (result.report or {}).get(
                         "decision") == "retrain" else "no retrain") + " (not retrained here)")
    lines += [f"    - {r}" for r in result.reasons]
    lines += [f"  CT run           {result.run_id} (experiment {result.experiment})", "=" * 72]
    # One machine-readable line for orchestrators that read the job's log (airflow/dags/)
    lines.append(RESULT_MARKER + json.dumps(result.to_dict(), default=str))
    return "\n".join(lines)
