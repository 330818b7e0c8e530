"""The training job: data -> Ray Tune search -> refit -> evaluation -> ONNX export with parity
check -> MLflow registry with gated promotion. Each stage lives in its own module."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import mlflow
import pandas as pd
import ray
from mlflow import MlflowClient

from raylane import plots, stops, tracking
from raylane.config import PipelineConfig
from raylane.data import DataError, PreparedData, infer_schema, read_table, split_data
from raylane.evaluation import Evaluation, GateResult, check_gates, evaluate
from raylane.export import ParityError, ParityReport, check_parity, to_onnx
from raylane.models import get_family
from raylane.onnx_model import OnnxModel
from raylane.promotion import Decision, decide_and_record
from raylane.registry import log_onnx_model, register_version
from raylane.stops import JobState
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
    """
    started = time.perf_counter()
    frame, data = loaded or load_data(config)
    metric = tuning_metric(config, data.schema.task)
    family = get_family(config.model.family)
    tracking_uri = config.tracking_uri
    tracking.setup(tracking_uri, config.mlflow.experiment)
    log.info("data: %d rows, %d features, task %s; tracking at %s", len(frame),
             len(data.schema.columns), data.schema.task, tracking_uri)

    run_dir = latest_run_dir(config) if resume else new_run_dir(config)
    state = JobState.for_resume(run_dir, data.digest) if resume else None  # or ResumeError
    parent_run_id = state.parent_run_id if state else None

    with mlflow.start_run(run_id=parent_run_id, run_name=config.mlflow.run_name) as run:
        stops.track_run(tracking_uri, run.info.run_id)
        state = state or JobState.new(run_dir, run.info.run_id, data.digest)
        stops.bind_state(state)
        if not state.done("tracking setup"):
            with stops.stage("tracking setup"):
                tracking.log_job_context(config, data, frame)
        with stops.stage("search"):
            if not ray.is_initialized():
                # A job (`ray job submit`, KubeRay RayJob) gets RAY_ADDRESS from Ray; run
                # directly, the job starts its own local Ray unless RAY_ADDRESS says where to
                # attach (`auto`).
                ray.init(address=os.environ.get("RAY_ADDRESS", "local"))
                stops.install()  # ray.init replaced the SIGTERM handler
            if resume and can_restore(run_dir):
                tuner = restore_tuner(config, data, run_dir)
            else:
                tuner = build_tuner(config, data, run.info.run_id, tracking_uri,
                                    config.mlflow.experiment, run_dir)
            results = run_search(tuner)
            search = summarize(results, metric)
        log.info("search done: best valid %s %.4f (%d trials, %d errored)", metric.name,
                 search.best_valid_score, len(search.trials), search.errored_trials)
        with stops.stage("logging"):
            _log_search(search, results, metric)

        with stops.stage("refit"):
            best = _refit(config, data, family, metric, search)
            evaluation = evaluate(best.pipeline, data, metric, config.gates.max_overfit_gap)
            gates = check_gates(evaluation, config.gates)
        with stops.stage("logging"):
            _log_evaluation(best, evaluation, gates, data, metric, config.seed)

        with stops.stage("export"):
            onnx_bytes = to_onnx(best.pipeline, data.schema)
            onnx_model = OnnxModel(onnx_bytes, data.schema)
        with stops.stage("parity"):
            ec = config.export
            parity = check_parity(best.pipeline, onnx_model, data.holdout.X, ec.parity_atol,
                                  ec.parity_rtol, ec.parity_max_mismatch_fraction)
            tracking.log_json(parity.as_dict(), "export/parity.json")
            mlflow.log_metrics({"parity.max_abs_diff": parity.max_abs_diff,
                                "parity.mismatched_rows": parity.mismatched_rows})
            mlflow.set_tag("raylane.parity", "passed" if parity.passed else "failed")
            if not parity.passed:
                raise ParityError(
                    f"ONNX parity check failed on {parity.rows} holdout rows: "
                    f"{parity.mismatched_rows} differ beyond atol={parity.atol}, "
                    f"rtol={parity.rtol} (max |diff| {parity.max_abs_diff:.3g}); "
                    "nothing was registered"
                )

        with stops.stage("registration"):
            logged = log_onnx_model(
                onnx_bytes, data.schema,
                input_example=data.holdout.X.head(3),
                output_example=_output_example(onnx_model, data),
                extra_metadata={
                    "source_run_id": run.info.run_id,
                    "holdout_metrics": evaluation.holdout,
                    "tuning_metric": metric.name,
                    "dataset_digest": data.digest,
                },
            )
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            version = register_version(
                client, logged, config.mlflow.registered_model, run.info.run_id,
                tags={"raylane.family": family.name, "raylane.dataset.digest": data.digest,
                      "raylane.parity.max_abs_diff": f"{parity.max_abs_diff:.3g}"},
            )
            stops.mark_registered(str(version.version))
        with stops.stage("promotion"):
            decision = decide_and_record(
                client, version, evaluation.holdout[metric.name], gates, data.holdout,
                data.schema, metric, tracking_uri,
            )
            mlflow.set_tags({"raylane.model_version": version.version,
                             "raylane.decision": "promoted" if decision.promoted
                             else "not promoted"})
        stops.mark_finished(str(version.version))
        return PipelineResult(
            config=config, run_id=run.info.run_id, search=search, evaluation=evaluation,
            gates=gates, parity=parity, model_name=version.name, version=str(version.version),
            decision=decision, tracking_uri=tracking_uri, seconds=time.perf_counter() - started,
        )


def _refit(config, data, family, metric, search: SearchOutcome) -> FitResult:
    """Refit the best configuration on the driver (deterministic under the config's seed)."""
    params = dict(search.best_params)
    if family.steps_param and search.best_steps:
        params[family.steps_param] = search.best_steps
    return fit_model(data, family, params, metric, config.seed)


def _output_example(model: OnnxModel, data: PreparedData) -> pd.DataFrame:
    pred = model.predict_frame(data.holdout.X.head(3))
    if data.schema.task == "classification":
        labels = data.schema.class_labels or []
        return pd.DataFrame(pred.probabilities, columns=[f"p_{c}" for c in labels])
    return pd.DataFrame({"prediction": pred.values})


def _log_search(search: SearchOutcome, results, metric) -> None:
    mlflow.log_params({f"best.{k}": v for k, v in search.best_params.items()})
    mlflow.log_metrics({f"best_valid_{metric.name}": search.best_valid_score,
                        "trials.errored": search.errored_trials,
                        "trials.count": len(search.trials)})
    tracking.log_frame(search.trials, "tuning/trials.csv")
    tracking.log_figure(plots.search_progress(search.trials, metric), "search_progress")
    histories = {r.path: r.metrics_dataframe for r in results if r.metrics_dataframe is not None}
    tracking.log_figure(plots.learning_curves(histories, metric), "tuning_curves")


def _log_evaluation(best: FitResult, ev: Evaluation, gates: GateResult, data, metric,
                    seed: int) -> None:
    mlflow.log_metrics({f"holdout_{k}": v for k, v in ev.holdout.items()})
    mlflow.log_metrics({f"baseline_{k}": v for k, v in ev.baseline.items()})
    mlflow.log_metrics({f"train_{metric.name}": ev.train_score,
                        f"valid_{metric.name}": ev.valid_score, "overfit_gap": ev.overfit_gap})
    mlflow.set_tags({"raylane.diagnosis": ev.diagnosis,
                     "raylane.gates": "passed" if gates.passed else "failed"})
    tracking.log_json({"passed": gates.passed, "reasons": gates.reasons,
                       "diagnosis": ev.diagnosis}, "evaluation/gates.json")
    fig, importance = plots.feature_importance(best.pipeline, data, metric, seed)
    tracking.log_figure(fig, "feature_importance")
    tracking.log_frame(importance.rename("importance").rename_axis("column").reset_index(),
                       "evaluation/feature_importance.csv")
    if data.schema.task == "classification":
        tracking.log_figure(plots.confusion_matrix(best.pipeline, data), "confusion_matrix")
        tracking.log_figure(plots.roc_curve(best.pipeline, data), "roc")
    else:
        tracking.log_figure(plots.residuals(best.pipeline, data), "residuals")

