"""The training job: data -> Ray Tune search -> refit -> evaluation -> publishing (ONNX export,
parity check, MLflow registry, gated promotion). Each stage lives in its own module."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from raylane.config import PipelineConfig
from raylane.data.holdout import HoldoutDefinition, holdout_mask, newest_mask
from raylane.data.read import DataError, PreparedData, infer_schema, split_data
from raylane.data.sources import describe, read_frame
from raylane.model.families import get_family
from raylane.model.schema import FeatureSchema
from raylane.model.tags import (
    DATASET_DIGEST,
    DIAGNOSIS,
    FAMILY,
    GATES,
    POS_LABEL,
    TRAINING_RUN_ID,
)
from raylane.monitoring.reference import reference_sample
from raylane.release.decision import Decision
from raylane.release.export import ParityReport
from raylane.release.gates import Evaluation, GateResult, check_gates, evaluate
from raylane.release.judging import JudgingSet
from raylane.release.publish import publish
from raylane.tracking import plots, runs
from raylane.tracking.experiments import check_store, open_experiment
from raylane.tracking.runs import RunLog
from raylane.training import interrupts
from raylane.training.fit import FitResult, fit_preprocessed
from raylane.training.interrupts import JobState
from raylane.training.preprocessed import PreprocessedSplits, preprocess
from raylane.training.tuning import (
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
    pos_label: str | None = None


def load_data(
    config: PipelineConfig, new_rows: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, PreparedData]:
    """Read, select, validate and split the table named by ``data.path``.

    ``new_rows`` (continuous training: newly labelled rows, same columns) are appended; the
    challenger is judged on the holdout rows among them (see :func:`stable_holdout`).
    """
    dc = config.data
    frame = read_frame(dc.path)
    is_new = np.zeros(len(frame), dtype=bool)
    if new_rows is not None and len(new_rows):
        frame = pd.concat([frame, new_rows[[c for c in frame.columns if c in new_rows]]],
                          ignore_index=True)
        is_new = np.r_[is_new, np.ones(len(new_rows), dtype=bool)]
    time_column = config.judging.time_column
    for key, names in (("data.columns", dc.columns or []), ("data.drop", dc.drop),
                       ("judging.time_column", [time_column] if time_column else [])):
        missing = [c for c in names if c not in frame.columns]
        if missing:
            raise DataError(f"{key}: columns {missing} are not in {describe(dc.path)}")
    keep = frame[dc.target].notna().to_numpy() if dc.target in frame.columns else slice(None)
    frame, is_new = frame[keep].reset_index(drop=True), is_new[keep]
    times = frame[time_column] if time_column else None
    if dc.columns:
        frame = frame[[c for c in dict.fromkeys([*dc.columns, dc.target])]]
    frame = frame.drop(columns=[c for c in [*dc.drop, time_column]
                                if c and c != dc.target and c in frame.columns])
    if dc.sample_rows and len(frame) > dc.sample_rows:
        frame = frame.sample(dc.sample_rows, random_state=config.seed)
        is_new = is_new[frame.index.to_numpy()]
        times = times.loc[frame.index] if times is not None else None
        frame = frame.reset_index(drop=True)
    schema = infer_schema(frame, dc.target, dc.task, dc.categorical, dc.max_categories)
    if config.tune.metric:
        tuning_metric(config, schema.task)  # fail now if the metric does not fit the task
    holdout, judge, definition = stable_holdout(config, frame, schema, times, is_new)
    data = split_data(frame, schema, dc.valid_fraction, dc.holdout_fraction, config.seed,
                      describe(dc.path),
                      pos_label=dc.pos_label, holdout=holdout)
    data.judge_rows = judge[holdout]
    data.holdout_definition = {**definition.as_dict(), "rows": int(holdout.sum()),
                               "judging_rows": int(judge[holdout].sum()),
                               "new_rows": int(is_new.sum())}
    return frame, data


def stable_holdout(
    config: PipelineConfig, frame: pd.DataFrame, schema: FeatureSchema,
    times: pd.Series | None, is_new: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, HoldoutDefinition]:
    """The holdout rows (by a hash of each row's key: the same rows in every retrain), the rows
    the challenger is judged on (holdout rows among the newest), and their definition."""
    jc = config.judging
    key = tuple(sorted(jc.key_columns or [*schema.feature_names, schema.target]))
    definition = HoldoutDefinition(
        fraction=config.data.holdout_fraction, key_columns=key, hash_seed=jc.hash_seed,
        time_column=jc.time_column, newest_fraction=jc.newest_fraction if jc.time_column else None,
    )
    try:
        holdout = holdout_mask(frame, definition)
    except KeyError as exc:
        raise DataError(exc.args[0]) from None
    timed = frame.assign(**{jc.time_column: times.to_numpy()}) if times is not None else frame
    return holdout, holdout & newest_mask(timed, definition, is_new), definition


def run_pipeline(
    config: PipelineConfig,
    resume: bool = False,
    loaded: tuple[pd.DataFrame, PreparedData] | None = None,
    tags: dict[str, str] | None = None,
) -> PipelineResult:
    """Run every stage; raise on a failed parity check (nothing is registered then).

    ``loaded`` is the result of :func:`load_data` when the caller already validated the data.
    ``tags`` go on the parent run and the model version (continuous training links its run).
    MLflow is reached only through a client for ``config.tracking_uri``: the job leaves MLflow's
    process-wide state (tracking URI, active run) as it found it.
    """
    if config.tune.workers_per_trial > 1:
        if resume:
            raise interrupts.ResumeError("--resume: not supported with tune.workers_per_trial > 1")
        from raylane.training.scale_job import run_scale_pipeline

        return run_scale_pipeline(config, tags)
    started = time.perf_counter()
    frame, data = loaded or load_data(config)
    metric = tuning_metric(config, data.schema.task).with_pos_label(data.pos_index)
    family = get_family(config.model.family)
    tracking_uri = config.tracking_uri
    check_store(tracking_uri)  # not in a Ray job's uploaded working dir (ConfigError)
    client = runs.mlflow_client(tracking_uri)
    experiment_id = open_experiment(client, config.mlflow.experiment)
    log.info("data: %d rows, %d features, task %s; tracking at %s", len(frame),
             len(data.schema.columns), data.schema.task, tracking_uri)

    run_dir = latest_run_dir(config) if resume else new_run_dir(config)
    state = JobState.for_resume(run_dir, data.digest) if resume else None  # or ResumeError
    parent_run_id = state.parent_run_id if state else None

    with runs.parent_run(client, experiment_id, config.mlflow.run_name,
                             run_id=parent_run_id) as run_id:
        state = state or JobState.new(run_dir, run_id, data.digest)
        interrupts.bind_state(state)
        interrupts.track_run(tracking_uri, run_id)
        run = runs.RunLog(client, run_id)
        if tags:
            run.tags(tags)
        if not state.done("tracking setup"):
            with interrupts.stage("tracking setup"):
                runs.log_job_context(run, config, data, frame)
                if data.pos_label is not None:  # which class f1 and the like count as positive
                    run.params({"data.pos_label": data.pos_label})
                    run.tags({POS_LABEL: data.pos_label})
        with interrupts.stage("search"):
            _ensure_ray()
            # Fitted once: every trial and the refit share it (its variant is the family's).
            splits = preprocess(data, family)
            log.info("preprocessing fitted once for the search and the refit in %.1f s",
                     splits.seconds)
            tuner = _tuner(config, data, splits, run_id, tracking_uri, run_dir, resume)
            results = _search(tuner)
            search = summarize(results, metric)
        log.info("search done: best valid %s %.4f (%d trials, %d errored)", metric.name,
                 search.best_valid_score, len(search.trials), search.errored_trials)
        with interrupts.stage("logging"):
            _log_search(run, search, results, metric)

        with interrupts.stage("refit"):
            best = _refit(config, splits, family, metric, search)
            evaluation = evaluate(best.pipeline, data, metric, config.gates.max_overfit_gap)
            gates = check_gates(evaluation, config.gates)
        with interrupts.stage("logging"):
            _log_evaluation(run, best, evaluation, gates, data, metric, config.seed)

        published = publish(
            best.pipeline, data.schema, data.holdout, metric=metric, gates=gates,
            client=client, registered_model=config.mlflow.registered_model, run_id=run_id,
            export=config.export,
            tags={FAMILY: family.name, DATASET_DIGEST: data.digest,
                  TRAINING_RUN_ID: run_id, **(tags or {})},
            judging=JudgingSet(rows=data.judge, definition=data.holdout_definition or {},
                               min_improvement=config.judging.min_improvement,
                               min_rows=config.judging.min_rows),
            metadata={"holdout_metrics": evaluation.holdout, "dataset_digest": data.digest},
            stage=interrupts.stage, on_registered=interrupts.mark_registered,
            raw_holdout=frame.loc[data.holdout.X.index, data.schema.feature_names]
            if frame.index.is_unique else None,
            reference=reference_sample(data.train, config.monitoring.reference_rows, config.seed),
        )
        version = published.version
        interrupts.mark_finished(str(version.version))
        return PipelineResult(
            config=config, run_id=run_id, search=search, evaluation=evaluation,
            gates=gates, parity=published.parity, model_name=version.name,
            version=str(version.version), decision=published.decision,
            tracking_uri=tracking_uri, seconds=time.perf_counter() - started,
            pos_label=data.pos_label,
        )


def _ensure_ray() -> None:
    if not ray.is_initialized():
        # A job (`ray job submit`, KubeRay RayJob) gets RAY_ADDRESS from Ray; run directly,
        # the job starts its own local Ray unless RAY_ADDRESS says where to attach (`auto`).
        ray.init(address=os.environ.get("RAY_ADDRESS", "local"))
        interrupts.install()  # ray.init replaced the SIGTERM handler


def _tuner(config: PipelineConfig, data: PreparedData, splits: PreprocessedSplits, run_id: str,
           tracking_uri: str, run_dir: Path, resume: bool):
    """The search to run: restored from ``run_dir`` when Tune saved a state there (a stopped
    search), else a new one whose trials nest under ``run_id``."""
    if resume and can_restore(run_dir):
        return restore_tuner(config, data, run_dir, splits)
    return build_tuner(config, data, run_id, tracking_uri, config.mlflow.experiment, run_dir,
                       splits=splits)


def _search(tuner):
    # Ray's MLflow callback sets MLflow's global tracking URI when Tune sets it up; undo that.
    with runs.mlflow_globals_restored():
        return run_search(tuner)


def _refit(config, splits: PreprocessedSplits, family, metric, search: SearchOutcome) -> FitResult:
    """Refit the best configuration on the driver (deterministic under the config's seed), on the
    splits the trials fitted on: its pipeline is the search's preprocessor and the new model."""
    params = dict(search.best_params)
    if family.steps_param and search.best_steps:
        params[family.steps_param] = search.best_steps
    return fit_preprocessed(splits, family, params, metric, config.seed)


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
    run.tags({DIAGNOSIS: ev.diagnosis,
              GATES: "passed" if gates.passed else "failed"})
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

