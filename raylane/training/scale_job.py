"""The training job when ``tune.workers_per_trial`` > 1: the table read and summarized with Ray
Data, trials trained data-parallel with Ray Train, the best trial's booster (from its
checkpoint) the model, holdout metrics over Ray Data in batches, then the same publish path
(ONNX export with the raw-column graph, parity on a sample of holdout rows, registry,
judging, promotion) as the small-data job."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost as xgb
from ray import tune
from ray.data.expressions import col
from sklearn.pipeline import Pipeline
from xgboost import XGBClassifier, XGBRegressor

from raylane.config import ConfigError, PipelineConfig
from raylane.data.aggregates import SPLIT_COLUMN
from raylane.data.distributed import TARGET_COLUMN, DatasetOptions, DistributedData, to_pandas
from raylane.data.read import Split
from raylane.data.splits import HOLDOUT, TRAIN
from raylane.model.batched_metrics import Accumulator
from raylane.model.metrics import Metric
from raylane.model.preprocessing import build_pipeline
from raylane.model.tags import (
    DATASET_DIGEST,
    DIAGNOSIS,
    FAMILY,
    GATES,
    TASK,
    TRAINING_RUN_ID,
    WORKERS_PER_TRIAL,
)
from raylane.monitoring.reference import reference_sample
from raylane.release.gates import Evaluation, check_gates
from raylane.release.judging import JudgingSet
from raylane.release.publish import publish
from raylane.tracking import runs
from raylane.tracking.experiments import open_experiment
from raylane.training.data_parallel import (
    LABEL_COLUMN,
    XGB_METRICS,
    ReleaseTrainGroups,
    created_placement_groups,
    preprocessor_from_stats,
    transformed_splits,
    trial_driver,
    wait_placement_groups_released,
)
from raylane.training.trial_resources import DRIVER_CPU, TrialPlan, cluster_cpus, plan_trials
from raylane.training.tuning import (
    SearchOutcome,
    build_tuner,
    new_run_location,
    run_search,
    summarize,
)

log = logging.getLogger(__name__)

# Holdout rows collected on the driver for the parity check, judging and the input example.
SAMPLE_ROWS = 5_000


def dataset_options(config: PipelineConfig) -> DatasetOptions:
    dc, jc = config.data, config.judging
    return DatasetOptions(
        path=dc.path, target=dc.target, task=dc.task, columns=dc.columns, drop=dc.drop,
        categorical=dc.categorical, max_categories=dc.max_categories,
        valid_fraction=dc.valid_fraction, holdout_fraction=dc.holdout_fraction,
        pos_label=dc.pos_label, key_columns=jc.key_columns, hash_seed=jc.hash_seed)


def check_metric(metric: Metric, data: DistributedData) -> None:
    if metric.name not in XGB_METRICS or (
            metric.name == "roc_auc" and len(data.schema.class_labels or []) != 2):
        raise ConfigError(f"tune.metric: {metric.name!r} is not available with "
                         f"tune.workers_per_trial > 1; use one of {sorted(XGB_METRICS)} "
                         "(roc_auc for binary targets)")


def trial_plan(config: PipelineConfig) -> TrialPlan:
    """How many trials run at once on the connected cluster (raises ``ConfigError`` when not
    even one trial's workers fit beside Ray Data's CPUs)."""
    tc = config.tune
    return plan_trials(cluster_cpus(), tc.workers_per_trial, tc.cpus_per_trial,
                       tc.max_concurrent_trials)


def with_concurrency(config: PipelineConfig, concurrent: int) -> PipelineConfig:
    return config.model_copy(update={"tune": config.tune.model_copy(
        update={"max_concurrent_trials": concurrent})})


def make_trainable(config: PipelineConfig, data: DistributedData, train, valid,
                   features: list[str], metric: Metric, storage_path: str):
    """The Tune function (one Ray Train run per trial) with the splits put once in the object
    store. It holds a hundredth of a CPU; the Train workers reserve theirs."""
    fn = tune.with_parameters(
        trial_driver, train=train, valid=valid, features=features, schema=data.schema,
        metric_name=metric.name, seed=config.seed, report_every=config.model.report_every,
        workers=config.tune.workers_per_trial, cpus_per_worker=config.tune.cpus_per_trial,
        storage_path=storage_path, placement_strategy=config.tune.placement_strategy)
    return tune.with_resources(fn, {"cpu": DRIVER_CPU})


def best_booster(results, metric: Metric, storage: str) -> tuple[xgb.Booster, Any]:
    """The booster of the best trial that finished (its last report carries the checkpoint,
    a path on the filesystem of ``storage``, the Train runs' storage path: on object storage
    the path comes without its scheme)."""
    from pyarrow.fs import FileSystem
    from ray.train import Checkpoint
    from ray.train.xgboost import RayTrainReportCallback

    key = f"valid_{metric.name}"
    finished = [r for r in results if r.error is None and r.metrics
                and r.metrics.get("checkpoint_path")]
    if not finished:
        raise RuntimeError("no trial finished with a model checkpoint")
    best = (max if metric.mode == "max" else min)(finished, key=lambda r: r.metrics[key])
    filesystem, _ = FileSystem.from_uri(storage)
    booster = RayTrainReportCallback.get_model(
        Checkpoint(best.metrics["checkpoint_path"], filesystem=filesystem))
    return booster, best


def as_estimator(booster: xgb.Booster, task: str):
    """The booster as XGBoost's scikit-learn estimator (what export and parity take)."""
    estimator = XGBClassifier() if task == "classification" else XGBRegressor()
    estimator.load_model(bytearray(booster.save_raw("json")))
    return estimator


def _accumulate(batch: pa.Table, booster_raw: bytes, features: list[str], task: str,
                pos_index: int | None) -> dict[str, np.ndarray]:
    import pickle

    batch = batch.to_pandas()
    booster = xgb.Booster(model_file=bytearray(booster_raw))
    raw = booster.predict(xgb.DMatrix(batch[features].to_numpy(np.float32)))
    if task == "classification" and raw.ndim == 1:
        raw = np.column_stack([1.0 - raw, raw])
    acc = Accumulator(task)
    y = batch[LABEL_COLUMN].to_numpy()
    acc.add(y.astype(np.int64) if task == "classification" else y, raw, pos_index)
    return {"acc": np.array([pickle.dumps(acc)], dtype=object)}


def batched_metrics(dataset, booster: xgb.Booster, features: list[str], task: str,
                    pos_index: int | None) -> Accumulator:
    """The booster's metrics over ``dataset`` (transformed rows), batch by batch."""
    import pickle

    parts = dataset.map_batches(
        _accumulate, batch_format="pyarrow", batch_size=65_536,
        fn_kwargs={"booster_raw": bytes(booster.save_raw("ubj")), "features": features,
                   "task": task, "pos_index": pos_index})
    total = Accumulator(task)
    for batch in parts.iter_batches(batch_format="numpy"):
        for value in batch["acc"]:
            total = total.merge(pickle.loads(value))
    return total


def baseline_metrics(data: DistributedData, holdout: Accumulator) -> dict[str, float]:
    """The prior (or mean) baseline's holdout metrics, from counts: no pass over the rows."""
    schema = data.schema
    if schema.task == "classification":
        labels = schema.class_labels or []
        train = data.class_counts["train"]
        prior = np.array([train.get(c, 0) for c in labels], dtype=float)
        prior /= prior.sum()
        held = np.array([data.class_counts["holdout"].get(c, 0) for c in labels])
        y = np.repeat(np.arange(len(labels)), held)
        acc = Accumulator("classification")
        acc.add(y, np.tile(prior, (len(y), 1)), data.pos_index)
        return acc.metrics()
    return {}


def sample_split(dataset, split: int, schema, rows: int) -> Split:
    """Up to ``rows`` prepared rows of one split, on the driver."""
    frame = to_pandas(dataset.filter(expr=col(SPLIT_COLUMN) == split).limit(rows))
    X = frame[schema.feature_names].reset_index(drop=True)
    for c in schema.numeric:
        X[c] = X[c].astype(np.float64)
    for c in schema.categorical:
        X[c] = X[c].astype(object)
    if schema.task == "classification":
        index = {label: i for i, label in enumerate(schema.class_labels or [])}
        y = np.asarray([index[v] for v in frame[TARGET_COLUMN]], dtype=np.int64)
    else:
        y = frame[TARGET_COLUMN].to_numpy(np.float64)
    return Split(X, y)


def run_scale_pipeline(config: PipelineConfig, tags: dict[str, str] | None = None):
    """Every stage of the data-parallel job; returns the small job's ``PipelineResult``."""
    from raylane.data.distributed import load_distributed
    from raylane.training.job import PipelineResult, _ensure_ray, _log_search, tuning_metric

    started = time.perf_counter()
    _ensure_ray()
    plan = trial_plan(config)  # before any pass over the data: a cluster too small fails fast
    if plan.concurrent != config.tune.max_concurrent_trials:
        log.info("running %d trials at once: %g CPUs each (Ray Train workers and the trial "
                 "function) of the cluster's %g, %g kept for Ray Data where it can",
                 plan.concurrent, plan.cpus_per_trial, plan.cluster_cpus, plan.data_cpus)
    config = with_concurrency(config, plan.concurrent)
    phases: dict[str, float] = {}
    clock = time.perf_counter()
    data = load_distributed(dataset_options(config))
    metric = tuning_metric(config, data.schema.task).with_pos_label(data.pos_index)
    check_metric(metric, data)
    phases["read_and_aggregates_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    preprocessor = preprocessor_from_stats(data.schema, data.stats.medians,
                                           data.stats.categories)
    train, valid, holdout = transformed_splits(data, preprocessor)
    features = [c for c in train.columns() if c != LABEL_COLUMN]
    phases["preprocessing_s"] = time.perf_counter() - clock

    tracking_uri = config.tracking_uri
    client = runs.mlflow_client(tracking_uri)
    experiment_id = open_experiment(client, config.mlflow.experiment)
    run_dir = new_run_location(config)  # local, or on object storage (s3://...)
    train_storage = f"{run_dir}/train"
    with runs.parent_run(client, experiment_id, config.mlflow.run_name) as run_id:
        run = runs.RunLog(client, run_id)
        run.tags({**(tags or {}), DATASET_DIGEST: data.digest, TASK: data.schema.task,
                  FAMILY: "xgboost", WORKERS_PER_TRIAL: str(config.tune.workers_per_trial)})
        run.params({"data.path": data.source.spec, "data.files": len(data.source.paths),
                    "rows.train": data.rows["train"], "rows.valid": data.rows["validation"],
                    "rows.holdout": data.rows["holdout"], "seed": config.seed,
                    "tune.num_samples": config.tune.num_samples,
                    "tune.workers_per_trial": config.tune.workers_per_trial,
                    "tune.placement_strategy": config.tune.placement_strategy,
                    "tune.concurrent_trials": plan.concurrent})
        run.text(data.schema.to_json(), "data/schema.json")
        run.json({"medians": data.stats.medians, "categories": data.stats.categories,
                  "digest": "sha256 of the file list with sizes and modification times"},
                 "data/statistics.json")
        clock = time.perf_counter()
        trainable = make_trainable(config, data, train, valid, features, metric,
                                   train_storage)
        release = ReleaseTrainGroups()
        tuner = build_tuner(config, data, run_id, tracking_uri, config.mlflow.experiment,
                            run_dir, trainable=trainable, extra_callbacks=[release],
                            # a stopped trial's actor goes, and its Ray Train run with it
                            reuse_actors=False)
        before = created_placement_groups()
        with runs.mlflow_globals_restored():
            results = run_search(tuner)
        left = wait_placement_groups_released(before)
        if left:
            log.warning("placement groups still held after the search: %s", left)
        run.metrics({"search.placement_groups_left": len(left),
                     "search.placement_groups_removed": len(release.removed)})
        search: SearchOutcome = summarize(results, metric)
        booster, best = best_booster(results, metric, train_storage)
        phases["search_s"] = time.perf_counter() - clock
        _log_search(run, search, results, metric)  # the small job's trials table and plots

        clock = time.perf_counter()
        pos = data.pos_index
        held = batched_metrics(holdout, booster, features, data.schema.task, pos)
        train_acc = batched_metrics(train, booster, features, data.schema.task, pos)
        holdout_metrics = held.metrics()
        valid_score = float(best.metrics[f"valid_{metric.name}"])
        train_score = train_acc.metrics()[metric.name]
        advantage = train_score - valid_score if metric.mode == "max" else (
            valid_score - train_score)
        gap = max(0.0, advantage) / max(abs(valid_score), 1e-12)
        baseline = baseline_metrics(data, held)
        diagnosis = "ok"
        if metric.name in baseline and not metric.better(holdout_metrics[metric.name],
                                                         baseline[metric.name]):
            diagnosis = "underfit"
        elif gap > config.gates.max_overfit_gap:
            diagnosis = "overfit"
        evaluation = Evaluation(holdout_metrics, baseline, train_score, valid_score,
                                metric.name, diagnosis, gap)
        gates = check_gates(evaluation, config.gates)
        phases["holdout_metrics_s"] = time.perf_counter() - clock
        run.metrics({**{f"holdout_{k}": v for k, v in holdout_metrics.items()},
                     **{f"baseline_{k}": v for k, v in baseline.items()},
                     f"train_{metric.name}": train_score, f"valid_{metric.name}": valid_score,
                     "holdout_auc_error_bound": held.auc_error_bound(), "overfit_gap": gap})
        run.tags({DIAGNOSIS: diagnosis, GATES: "passed" if gates.passed else "failed"})

        clock = time.perf_counter()
        pipeline: Pipeline = build_pipeline(preprocessor, as_estimator(booster,
                                                                        data.schema.task))
        holdout_sample = sample_split(data.dataset, HOLDOUT, data.schema, SAMPLE_ROWS)
        train_sample = sample_split(data.dataset, TRAIN, data.schema,
                                    config.monitoring.reference_rows)
        published = publish(
            pipeline, data.schema, holdout_sample, metric=metric, gates=gates, client=client,
            registered_model=config.mlflow.registered_model, run_id=run_id,
            export=config.export,
            tags={FAMILY: "xgboost", DATASET_DIGEST: data.digest, TRAINING_RUN_ID: run_id,
                  **(tags or {})},
            judging=JudgingSet(rows=holdout_sample, definition=data.holdout_definition,
                               min_improvement=config.judging.min_improvement,
                               min_rows=config.judging.min_rows),
            metadata={"holdout_metrics": holdout_metrics, "dataset_digest": data.digest},
            reference=reference_sample(train_sample, config.monitoring.reference_rows,
                                       config.seed),
        )
        phases["export_and_publish_s"] = time.perf_counter() - clock
        run.metrics({f"phase.{k}": v for k, v in phases.items()})
        version = published.version
        return PipelineResult(
            config=config, run_id=run_id, search=search, evaluation=evaluation, gates=gates,
            parity=published.parity, model_name=version.name, version=str(version.version),
            decision=published.decision, tracking_uri=tracking_uri,
            seconds=time.perf_counter() - started, pos_label=data.pos_label)
