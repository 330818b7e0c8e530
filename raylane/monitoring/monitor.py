"""One monitoring pass: the served version's logged traffic against its reference profile."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from raylane.config import PipelineConfig
from raylane.locations import check_location
from raylane.model.schema import FeatureSchema
from raylane.model.store import load_version
from raylane.monitoring import recording
from raylane.monitoring.drift import (
    ColumnDrift,
    DatasetDrift,
    Sample,
    compare,
    compare_samples,
    sample,
)
from raylane.monitoring.drift import column_drift as drift_of
from raylane.monitoring.performance import live_performance, read_labels
from raylane.monitoring.reading import as_utc, read_window, time_range
from raylane.monitoring.reference import load_profile
from raylane.monitoring.report import MonitorReport, build_body, decide
from raylane.monitoring.window import WindowSummary, reference_edges, summarize_window
from raylane.tracking import runs
from raylane.tracking.experiments import open_experiment

log = logging.getLogger(__name__)


def run_monitor(
    config: PipelineConfig, predictions: str, *, labels: str | None = None,
    model_uri: str | None = None, since: datetime | None = None, until: datetime | None = None,
    report_path: str | None = None,
) -> MonitorReport:
    """Read the log under ``predictions`` for the version ``model_uri`` resolves to (default:
    the config's, else ``models:/<registered_model>@champion``), compare it with the version's
    reference profile, join ``labels`` when given, decide, and record it all as a run in the
    monitoring experiment (and as JSON at ``report_path``).

    The window is ``[since, until)``; without ``since`` it starts ``monitoring.window`` says
    (the last report's end, or ``lookback_hours`` ago, else the start of the log); ``until``
    defaults to now and is recorded, so the next "since last report" starts there.
    """
    for option, location in (("--predictions", predictions), ("--labels", labels),
                             ("--report", report_path)):
        if location:
            check_location(option, location)  # before anything reads or writes
    mon = config.monitoring
    client = runs.mlflow_client(config.tracking_uri)
    uri = model_uri or mon.model_uri or f"models:/{config.mlflow.registered_model}@champion"
    registered = load_version(client, uri)
    version = client.get_model_version(registered.name, registered.version)
    profile = load_profile(client, version)
    schema = registered.schema
    experiment_id = open_experiment(client, recording.experiment_name(config))
    until = as_utc(until) if until else datetime.now(UTC)
    since = as_utc(since) if since else None
    if since is None and mon.window.since_last_report:
        since = recording.last_report_end(client, experiment_id, registered.name)
    if since is None and mon.window.lookback_hours:
        since = until - timedelta(hours=mon.window.lookback_hours)

    features = _columns(mon.drift.columns, schema)
    kinds = {c: schema.column(c).kind for c in features}
    summary: WindowSummary | None = None
    if labels is None and mon.max_rows is None:
        # Counted where the blocks lie: the driver holds counts per column, not the rows.
        summary = _summarize(predictions, registered, features, kinds, schema, profile,
                             since, until)
        rows = summary.rows
    else:  # live performance joins rows with their labels; max_rows samples rows
        window = read_window(predictions, registered.name, registered.version, features,
                             since=since, until=until, max_rows=mon.max_rows, seed=config.seed)
        rows = window.num_rows
    log.info("monitor: %d logged rows of %s v%s in [%s, %s)", rows, registered.name,
             registered.version, since, until)

    drift: DatasetDrift | None = None
    prediction: ColumnDrift | None = None
    if rows >= mon.triggers.min_rows:
        categories = {c.name: set(c.categories or []) for c in schema.columns
                      if c.kind == "categorical"}
        if summary is not None:
            drift = compare_samples(profile.sample, summary.samples, kinds, mon.drift,
                                    categories)
            prediction = _prediction_drift_of(profile.predictions, summary.samples.get(
                "prediction"), schema, mon.drift)
        else:
            drift = compare(profile.sample, window, kinds, mon.drift, categories)
            prediction = _prediction_drift(profile.predictions, window, schema, mon.drift)
    performance = None
    if labels:
        performance = live_performance(
            window, read_labels(labels), schema, profile.holdout_metrics,
            metric=mon.triggers.performance_metric, tolerance=mon.triggers.performance_tolerance,
            min_rows=mon.triggers.min_labelled_rows)
    decision, reasons = decide(rows, drift, prediction, performance, mon.triggers)

    first, last = (summary.first, summary.last) if summary is not None else time_range(window)
    body = build_body(
        model={"name": registered.name, "version": registered.version, "uri": uri,
               "reference": profile.uri, "reference_rows": profile.sample.num_rows},
        window={"since": since.isoformat() if since else None, "until": until.isoformat(),
                "first": first.isoformat() if first else None,
                "last": last.isoformat() if last else None},
        rows=rows, drift=drift, drift_share_threshold=mon.drift.drift_share,
        prediction=prediction.to_dict() if prediction else None, performance=performance,
    )
    with runs.parent_run(
        client, experiment_id, run_name=f"monitor-{registered.name}-v{registered.version}",
    ) as run_id:
        report = MonitorReport(decision, reasons, run_id, body)
        recording.log_report(client, run_id, report, until, drift)
    if report_path:
        report.write(report_path)
    log.info("monitor: decision %s: %s", decision, "; ".join(reasons))
    return report


def _columns(selected: list[str] | None, schema: FeatureSchema) -> list[str]:
    names = schema.feature_names
    unknown = sorted(set(selected or []) - set(names))
    if unknown:
        raise ValueError(f"monitoring.drift.columns: {unknown} are not columns of the model; "
                         f"expected some of {names}")
    return list(selected) if selected else names


def _prediction_drift(reference: pa.Table, window: pa.Table, schema: FeatureSchema,
                      cfg) -> ColumnDrift | None:
    """Drift of the output: the predicted class (classifiers) or value (regressors)."""
    if "prediction" not in window.column_names:
        return None
    kind = "categorical" if schema.task == "classification" else "numeric"
    ref, cur = sample(reference.column("prediction"), kind), sample(window.column("prediction"),
                                                                     kind)
    return drift_of("prediction", kind, ref, cur, cfg,
                    set(schema.class_labels or []) if kind == "categorical" else None)


def _summarize(predictions: str, registered, features: list[str], kinds: dict[str, str],
               schema: FeatureSchema, profile, since, until) -> WindowSummary:
    counted = dict(kinds)
    counted["prediction"] = "categorical" if schema.task == "classification" else "numeric"
    edges = reference_edges(profile.sample, [c for c, k in kinds.items() if k == "numeric"])
    return summarize_window(predictions, registered.name, registered.version, features, counted,
                            edges, since=since, until=until)


def _prediction_drift_of(reference: pa.Table, current: Sample | None, schema: FeatureSchema,
                         cfg) -> ColumnDrift | None:
    """:func:`_prediction_drift` with the window's predictions already counted."""
    if current is None:
        return None
    kind = "categorical" if schema.task == "classification" else "numeric"
    ref = sample(reference.column("prediction"), kind)
    return drift_of("prediction", kind, ref, current, cfg,
                    set(schema.class_labels or []) if kind == "categorical" else None)

