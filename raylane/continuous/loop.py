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

from raylane.config import PipelineConfig
from raylane.continuous.inputs import new_labelled_rows
from raylane.data.read import DataError
from raylane.locations import LocationError, check_location
from raylane.model.tags import (
    CT_DECISION,
    CT_MODEL_URI,
    CT_RUN_ID,
    CT_TRIGGER,
    DECISION_REASONS,
    HOLDOUT_PREFIX,
    JUDGING_CHALLENGER,
    JUDGING_CHAMPION,
    JUDGING_METRIC,
    JUDGING_PREFIX,
    JUDGING_ROWS,
    MODEL_URI,
    MODEL_VERSION,
    MONITORING_DECISION,
    MONITORING_REASONS,
    MONITORING_RUN_ID,
    REGISTERED_MODEL,
    ROLE,
    TRAINING_RUN_ID,
)
from raylane.tracking import runs
from raylane.tracking.experiments import open_experiment
from raylane.training import interrupts

log = logging.getLogger(__name__)
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


def run_continuous_training(
    config: PipelineConfig,
    *,
    predictions: str | None = None,
    new_data: str | None = None,
    labels: str | None = None,
    force: bool = False,
    model_uri: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
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
    from raylane.training.job import load_data, run_pipeline

    if not force and not predictions and not monitoring_run_id:
        raise DataError("--predictions is required unless --force")
    for option, location in (("--predictions", predictions), ("--new-data", new_data),
                             ("--labels", labels), ("--report", report_path)):
        if location:
            try:
                check_location(option, location)  # before anything reads or writes
            except LocationError as exc:
                raise DataError(str(exc)) from None
    client = runs.mlflow_client(config.tracking_uri)
    experiment = f"{config.mlflow.experiment}-ct"
    experiment_id = open_experiment(client, experiment)
    model_uri = model_uri or f"models:/{config.mlflow.registered_model}@champion"
    with runs.parent_run(client, experiment_id, run_name="continuous-training") as run_id:
        interrupts.track_run(config.tracking_uri, run_id)
        run = runs.RunLog(client, run_id)
        result = CTResult(run_id=run_id, experiment=experiment,
                          trigger="forced" if force else "monitor", retrained=False)
        run.tags({ROLE: "continuous-training", CT_TRIGGER: result.trigger,
                  CT_MODEL_URI: model_uri,
                  REGISTERED_MODEL: config.mlflow.registered_model})
        run.params({"predictions": predictions, "new_data": new_data, "labels": labels,
                    "force": force, "since": since.isoformat() if since else None,
                    "until": until.isoformat() if until else None})
        if monitoring_run_id and not force:
            result.monitoring_run_id = monitoring_run_id
            run.tags({MONITORING_RUN_ID: monitoring_run_id,
                      MONITORING_DECISION: "retrain"})
            client.set_tag(monitoring_run_id, CT_RUN_ID, run_id)
        elif not force:
            with interrupts.stage("monitoring"):
                report = _monitor(config, predictions, labels, model_uri, since, until,
                                  report_path)
            result.report, result.monitoring_run_id = report.to_dict(), report.run_id
            run.json(result.report, "monitoring/report.json")
            run.tags({MONITORING_RUN_ID: report.run_id or "none",
                      MONITORING_DECISION: report.decision,
                      MONITORING_REASONS: "; ".join(report.reasons)[:5000]})
            if report.run_id:
                client.set_tag(report.run_id, CT_RUN_ID, run_id)
            if report.decision != "retrain" or monitor_only:
                result.reasons = [f"monitor decided {report.decision!r}: "
                                  + ("; ".join(report.reasons) or "no drift")]
                run.tags({CT_DECISION: "monitor only" if monitor_only
                          else "no retrain"})
                run.json(result.to_dict(), "ct/result.json")
                return result
        if monitor_only:  # forced: nothing to ask the monitor
            result.reasons = ["forced"]
            run.tags({CT_DECISION: "monitor only"})
            return result
        with interrupts.stage("data load"):
            rows = new_labelled_rows(config, new_data, predictions, labels)
            result.new_rows = len(rows)
            loaded = load_data(config, rows if len(rows) else None)
            run.metrics({"new_rows": len(rows), "judging_rows": len(loaded[1].judge.y)})
            run.json(loaded[1].holdout_definition, "judging/holdout_definition.json")
        links = {CT_RUN_ID: run_id, CT_TRIGGER: result.trigger}
        if result.monitoring_run_id:
            links[MONITORING_RUN_ID] = result.monitoring_run_id
        trained = run_pipeline(config, loaded=loaded, tags=links)
        result.retrained = True
        result.training_run_id, result.model_version = trained.run_id, trained.version
        result.promoted, result.reasons = trained.decision.promoted, trained.decision.reasons
        version = client.get_model_version(trained.model_name, trained.version)
        result.scores = {k: v for k, v in version.tags.items()
                         if k.startswith((JUDGING_PREFIX, HOLDOUT_PREFIX))}
        run.tags({TRAINING_RUN_ID: trained.run_id,
                  MODEL_VERSION: trained.version,
                  MODEL_URI: f"models:/{trained.model_name}/{trained.version}",
                  CT_DECISION: "promoted" if result.promoted else "not promoted",
                  DECISION_REASONS: "; ".join(result.reasons)[:5000] or "won",
                  **result.scores})
        run.json(result.to_dict(), "ct/result.json")
        return result


def _monitor(config, predictions, labels, model_uri, since, until, report_path):
    from raylane.monitoring import run_monitor

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
                  f"  judged on        {result.scores.get(JUDGING_ROWS)} rows: "
                  f"challenger {result.scores.get(JUDGING_CHALLENGER)} vs champion "
                  f"{result.scores.get(JUDGING_CHAMPION)} "
                  f"({result.scores.get(JUDGING_METRIC)})",
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
