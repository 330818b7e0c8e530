"""The training job: data -> Ray Tune search -> refit -> evaluation -> publishing (ONNX export,
parity check, MLflow registry, gated promotion). Each stage lives in its own module."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray

from raylane import plots, stops, tracking
from raylane.config import PipelineConfig
from raylane.data import DataError, PreparedData, infer_schema, read_table, split_data
from raylane.evaluation import Evaluation, GateResult, check_gates, evaluate
from raylane.export import ParityReport
from raylane.families import get_family
from raylane.monitoring.reference import reference_sample
from raylane.promotion import Decision
from raylane.publishing import publish
from raylane.stops import JobState
from raylane.tracking import RunLog
from raylane.training import FitResult, fit_model
from raylane.tuning import (
    SearchOutcome,
    build_tuner,
    can_restore,
    latest_run_dir,
    new_run_dir,
    restore_tuner,
    run_search,
    summarize,
    tuning_metric,
)

log = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    config: PipelineConfig
    run_id: str
    search: SearchOutcome
    evaluation: Evaluation
    gates: GateResult
    parity: ParityReport
    model_name: str
    version: str
    decision: Decision
    tracking_uri: str
    seconds: float


def load_data(config: PipelineConfig) -> tuple[pd.DataFrame, PreparedData]:
    """Read, select, validate and split the table named by ``data.path``."""
    dc = config.data
    frame = read_table(dc.path)
    for key, names in (("data.columns", dc.columns or []), ("data.drop", dc.drop)):
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise DataError(f"{key}: columns {missing} are not in {dc.path}")
    if dc.columns:
        frame = frame[[c for c in dict.fromkeys([*dc.columns, dc.target])]]
    frame = frame.drop(columns=[c for c in dc.drop if c != dc.target])
    if dc.sample_rows and len(frame) > dc.sample_rows:
        frame = frame.sample(dc.sample_rows, random_state=config.seed).reset_index(drop=True)
    schema = infer_schema(frame, dc.target, dc.task, dc.categorical, dc.max_categories)
    if config.tune.metric:
        tuning_metric(config, schema.task)  # fail now if the metric does not fit the task
    data = split_data(frame, schema, dc.valid_fraction, dc.holdout_fraction, config.seed, dc.path)
    return frame, data


def run_pipeline(
    config: PipelineConfig,
    resume: bool = False,
    loaded: tuple[pd.DataFrame, PreparedData] | None = None,
) -> PipelineResult:
    """Run every stage; raise on a failed parity check (nothing is registered then).

    ``loaded`` is the result of :func:`load_data` when the caller already validated the data.
    MLflow is reached only through a client for ``config.tracking_uri``: the job leaves MLflow's
    process-wide state (tracking URI, active run) as it found it.
    """
    started = time.perf_counter()
    frame, data = loaded or load_data(config)
    metric = tuning_metric(config, data.schema.task)
    family = get_family(config.model.family)
    tracking_uri = config.tracking_uri
    client = tracking.mlflow_client(tracking_uri)
    experiment_id = tracking.ensure_experiment(client, config.mlflow.experiment)
    log.info("data: %d rows, %d features, task %s; tracking at %s", len(frame),
             len(data.schema.columns), data.schema.task, tracking_uri)

    run_dir = latest_run_dir(config) if resume else new_run_dir(config)
    state = JobState.for_resume(run_dir, data.digest) if resume else None  # or ResumeError
    parent_run_id = state.parent_run_id if state else None

    with tracking.parent_run(client, experiment_id, config.mlflow.run_name,
                             run_id=parent_run_id) as run_id:
        state = state or JobState.new(run_dir, run_id, data.digest)
        stops.bind_state(state)
        stops.track_run(tracking_uri, run_id)
        run = tracking.RunLog(client, run_id)
        if not state.done("tracking setup"):
            with stops.stage("tracking setup"):
                tracking.log_job_context(run, config, data, frame)
        with stops.stage("search"):
            _ensure_ray()
            tuner = _tuner(config, data, run_id, tracking_uri, run_dir, resume)
            results = _search(tuner)
            search = summarize(results, metric)
        log.info("search done: best valid %s %.4f (%d trials, %d errored)", metric.name,
                 search.best_valid_score, len(search.trials), search.errored_trials)
        with stops.stage("logging"):
            _log_search(run, search, results, metric)

        with stops.stage("refit"):
            best = _refit(config, data, family, metric, search)
            evaluation = evaluate(best.pipeline, data, metric, config.gates.max_overfit_gap)
            gates = check_gates(evaluation, config.gates)
        with stops.stage("logging"):
            _log_evaluation(run, best, evaluation, gates, data, metric, config.seed)

        published = publish(
            best.pipeline, data.schema, data.holdout, metric=metric, gates=gates,
            client=client, registered_model=config.mlflow.registered_model, run_id=run_id,
            export=config.export,
            tags={"raylane.family": family.name, "raylane.dataset.digest": data.digest},
            metadata={"holdout_metrics": evaluation.holdout, "dataset_digest": data.digest},
            stage=stops.stage, on_registered=stops.mark_registered,
            reference=reference_sample(data.train, config.monitoring.reference_rows, config.seed),
        )
        version = published.version
        stops.mark_finished(str(version.version))
        return PipelineResult(
            config=config, run_id=run_id, search=search, evaluation=evaluation,
            gates=gates, parity=published.parity, model_name=version.name,
            version=str(version.version), decision=published.decision,
            tracking_uri=tracking_uri, seconds=time.perf_counter() - started,
        )


def _ensure_ray() -> None:
    if not ray.is_initialized():
        # A job (`ray job submit`, KubeRay RayJob) gets RAY_ADDRESS from Ray; run directly,
        # the job starts its own local Ray unless RAY_ADDRESS says where to attach (`auto`).
        ray.init(address=os.environ.get("RAY_ADDRESS", "local"))
        stops.install()  # ray.init replaced the SIGTERM handler


def _tuner(config: PipelineConfig, data: PreparedData, run_id: str, tracking_uri: str,
           run_dir: Path, resume: bool):
    """The search to run: restored from ``run_dir`` when Tune saved a state there (a stopped
    search), else a new one whose trials nest under ``run_id``."""
    if resume and can_restore(run_dir):
        return restore_tuner(config, data, run_dir)
    return build_tuner(config, data, run_id, tracking_uri, config.mlflow.experiment, run_dir)


def _search(tuner):
    # Ray's MLflow callback sets MLflow's global tracking URI when Tune sets it up; undo that.
    with tracking.mlflow_globals_restored():
        return run_search(tuner)


def _refit(config, data, family, metric, search: SearchOutcome) -> FitResult:
    """Refit the best configuration on the driver (deterministic under the config's seed)."""
    params = dict(search.best_params)
    if family.steps_param and search.best_steps:
        params[family.steps_param] = search.best_steps
    return fit_model(data, family, params, metric, config.seed)


def _log_search(run: RunLog, search: SearchOutcome, results, metric) -> None:
    run.params({f"best.{k}": v for k, v in search.best_params.items()})
    run.metrics({f"best_valid_{metric.name}": search.best_valid_score,
                 "trials.errored": search.errored_trials, "trials.count": len(search.trials)})
    run.frame(search.trials, "tuning/trials.csv")
    run.figure(plots.search_progress(search.trials, metric), "search_progress")
    histories = {r.path: r.metrics_dataframe for r in results if r.metrics_dataframe is not None}
    run.figure(plots.learning_curves(histories, metric), "tuning_curves")


def _log_evaluation(run: RunLog, best: FitResult, ev: Evaluation, gates: GateResult, data,
                    metric, seed: int) -> None:
    run.metrics({
        **{f"holdout_{k}": v for k, v in ev.holdout.items()},
        **{f"baseline_{k}": v for k, v in ev.baseline.items()},
        f"train_{metric.name}": ev.train_score, f"valid_{metric.name}": ev.valid_score,
        "overfit_gap": ev.overfit_gap,
    })
    run.tags({"raylane.diagnosis": ev.diagnosis,
              "raylane.gates": "passed" if gates.passed else "failed"})
    run.json({"passed": gates.passed, "reasons": gates.reasons, "diagnosis": ev.diagnosis},
             "evaluation/gates.json")
    fig, importance = plots.feature_importance(best.pipeline, data, metric, seed)
    run.figure(fig, "feature_importance")
    run.frame(importance.rename("importance").rename_axis("column").reset_index(),
              "evaluation/feature_importance.csv")
    if data.schema.task == "classification":
        run.figure(plots.confusion_matrix(best.pipeline, data), "confusion_matrix")
        run.figure(plots.roc_curve(best.pipeline, data), "roc")
    else:
        run.figure(plots.residuals(best.pipeline, data), "residuals")

