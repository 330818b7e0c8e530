"""Data-parallel trials (``tune.workers_per_trial`` > 1): each Tune trial is a Ray Train
``XGBoostTrainer`` of N workers, started from a Tune function (the pattern of Ray's
hyperparameter-optimization guide), the training split sharded across them.

- The preprocessing is fitted once per job from the aggregates (:func:`preprocessor_from_stats`),
  applied in ``map_batches`` and the transformed splits materialized once, shared by every trial.
- Each worker builds a ``QuantileDMatrix`` from an ``xgboost.DataIter`` over its shard's
  ``iter_batches`` (never the whole shard as pandas) and the validation one with ``ref=``.
- Every ``model.report_every`` rounds the workers report through Ray Train, and
  ``TuneReportCallback`` passes it to Tune, so ASHA stops weak trials; the last report carries
  the booster as a checkpoint, the model of the best trial (no refit).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import xgboost as xgb
from ray import tune
from ray.data.expressions import col
from sklearn.compose import ColumnTransformer

from raylane.data.aggregates import SPLIT_COLUMN
from raylane.data.distributed import TARGET_COLUMN, DistributedData
from raylane.data.splits import HOLDOUT, TRAIN, VALID
from raylane.model.metrics import Metric
from raylane.model.preprocessing import build_preprocessor
from raylane.model.schema import FeatureSchema

LABEL_COLUMN = "__label"
# The key of each report naming the placement group of the trial's Ray Train workers.
PLACEMENT_GROUP_KEY = "train_placement_group"
# Our metric -> XGBoost's eval_metric (and how to turn its value into ours).
XGB_METRICS: dict[str, tuple[str, Any]] = {
    "roc_auc": ("auc", lambda v: v),
    "log_loss": ("logloss", lambda v: v),
    "accuracy": ("error", lambda v: 1.0 - v),
    "rmse": ("rmse", lambda v: v),
    "mae": ("mae", lambda v: v),
}
# XGBoost's scikit-learn names of the search space -> xgb.train's.
_RENAMED = {"n_jobs": "nthread", "random_state": "seed"}
_SKLEARN_ONLY = {"n_estimators", "callbacks", "early_stopping_rounds", "importance_type",
                 "enable_categorical", "missing"}


def preprocessor_from_stats(schema: FeatureSchema, medians: dict[str, float],
                            categories: dict[str, list[str]]) -> ColumnTransformer:
    """The shared preprocessing (:func:`raylane.model.preprocessing.build_preprocessor`) with the
    training split's medians and categories from the aggregates instead of a fit on rows.

    It is fitted on a frame of a few synthetic rows whose median is the aggregate's and whose
    categories are the aggregate's (explicit ``categories=`` so their order is sklearn's sorted
    one), so the fitted object is the one the small-data path would have fitted.
    """
    preprocessor = build_preprocessor(schema, scale_numeric=False)
    cats = {c: categories.get(c) or [""] for c in schema.categorical}
    rows = max([1, *(len(v) for v in cats.values())])
    frame = pd.DataFrame({
        **{c: np.full(rows, medians.get(c, 0.0) if not math.isnan(medians.get(c, math.nan))
                      else 0.0) for c in schema.numeric},
        **{c: np.resize(np.asarray(v, dtype=object), rows) for c, v in cats.items()},
    })[schema.feature_names]
    for name, step, _ in preprocessor.transformers:
        if name == "categorical":
            step.set_params(categories=[sorted(cats[c]) for c in schema.categorical])
    return preprocessor.fit(frame)


def transform_block(batch: pa.Table | pd.DataFrame, preprocessor: ColumnTransformer,
                    schema: FeatureSchema) -> pd.DataFrame:
    """One prepared block as the model sees it: float32 feature columns, the label (class index
    or float) and the split."""
    if isinstance(batch, pa.Table):
        batch = batch.to_pandas()  # NumPy dtypes, as the preprocessing was fitted on
    features = preprocessor.transform(batch[schema.feature_names]).astype(np.float32)
    out = pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])
    y = batch[TARGET_COLUMN]
    if schema.task == "classification":
        index = {label: i for i, label in enumerate(schema.class_labels or [])}
        out[LABEL_COLUMN] = np.asarray([index[v] for v in y], dtype=np.float32)
    else:
        out[LABEL_COLUMN] = np.asarray(y, dtype=np.float32)
    out[SPLIT_COLUMN] = np.asarray(batch[SPLIT_COLUMN], dtype=np.int8)
    return out


def transformed_splits(data: DistributedData, preprocessor: ColumnTransformer):
    """Train, validation and holdout, transformed once and materialized (shared by trials)."""
    transformed = data.dataset.map_batches(
        transform_block, batch_format="pyarrow",
        fn_kwargs={"preprocessor": preprocessor, "schema": data.schema}).materialize()
    return tuple(
        transformed.filter(expr=col(SPLIT_COLUMN) == code).drop_columns([SPLIT_COLUMN])
        .materialize()
        for code in (TRAIN, VALID, HOLDOUT))


class BatchIter(xgb.DataIter):
    """An ``xgboost.DataIter`` over a Ray Data iterable's batches: XGBoost builds its quantile
    matrix from one batch at a time, so a worker never holds its shard as one frame."""

    def __init__(self, batches, features: list[str], batch_size: int = 65_536) -> None:
        self._batches = batches
        self._features = features
        self._batch_size = batch_size
        self._it: Iterator[dict[str, np.ndarray]] | None = None
        super().__init__(release_data=True)

    def next(self, input_data) -> bool:
        if self._it is None:
            self._it = iter(self._batches.iter_batches(batch_size=self._batch_size,
                                                       batch_format="numpy"))
        batch = next(self._it, None)
        if batch is None:
            return False
        X = np.column_stack([batch[f] for f in self._features]).astype(np.float32, copy=False)
        input_data(data=X, label=batch[LABEL_COLUMN])
        return True

    def reset(self) -> None:
        self._it = None


def booster_params(params: dict[str, Any], schema: FeatureSchema, metric: Metric,
                   seed: int) -> tuple[dict[str, Any], int]:
    """xgb.train's parameters and rounds for a trial's (scikit-learn named) params."""
    out: dict[str, Any] = {"tree_method": "hist", "seed": seed}
    for key, value in params.items():
        if key not in _SKLEARN_ONLY and value is not None:
            out[_RENAMED.get(key, key)] = value
    classes = len(schema.class_labels or [])
    if schema.task == "regression":
        out["objective"] = "reg:squarederror"
    elif classes == 2:
        out["objective"] = "binary:logistic"
    else:
        out.update(objective="multi:softprob", num_class=classes)
    name = XGB_METRICS[metric.name][0]
    out["eval_metric"] = "mlogloss" if name == "logloss" and classes > 2 else (
        "merror" if name == "error" and classes > 2 else name)
    return out, int(params.get("n_estimators") or 100)


class RoundsReport(xgb.callback.TrainingCallback):
    """Report ``valid_<metric>`` and ``steps`` to Ray Train every ``every`` rounds on every
    worker (Ray Train V2 wants each worker's report); the last report carries the booster as a
    checkpoint from rank 0 (``RayTrainReportCallback``'s file layout, read by its
    ``get_model``)."""

    def __init__(self, metric_name: str, xgb_metric: str, every: int, total: int) -> None:
        self.key = f"valid_{metric_name}"
        self.xgb_metric = xgb_metric
        self.convert = XGB_METRICS[metric_name][1]
        self.every, self.total = every, total

    def _entry(self, evals_log, rounds: int) -> dict[str, Any]:
        import ray

        value = evals_log["valid"][self.xgb_metric][-1]
        return {self.key: float(self.convert(value)), "steps": rounds,
                # the Train run's worker group: the driver removes it once Tune ends the trial
                PLACEMENT_GROUP_KEY: ray.get_runtime_context().get_placement_group_id()}

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log) -> bool:
        import ray.train

        rounds = epoch + 1
        if rounds % self.every == 0 and rounds != self.total:
            ray.train.report(self._entry(evals_log, rounds))
        self._log = evals_log
        return False

    def after_training(self, model: xgb.Booster) -> xgb.Booster:
        import tempfile
        from pathlib import Path

        import ray.train
        from ray.train.xgboost import RayTrainReportCallback

        entry = self._entry(self._log, model.num_boosted_rounds())
        if ray.train.get_context().get_world_rank() == 0:
            with tempfile.TemporaryDirectory() as tmp:
                model.save_model(str(Path(tmp, RayTrainReportCallback.CHECKPOINT_NAME)))
                ray.train.report(entry, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(entry)
        return model


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: quantile matrices from its shard and the validation split, then
    ``xgb.train`` (XGBoost's collective, set up by Ray Train, syncs the workers)."""
    import ray.train

    features = config["features"]
    dtrain = xgb.QuantileDMatrix(BatchIter(ray.train.get_dataset_shard("train"), features),
                                 max_bin=config.get("max_bin", 256))
    dvalid = xgb.QuantileDMatrix(BatchIter(ray.train.get_dataset_shard("valid"), features),
                                 ref=dtrain)
    params, rounds = config["params"], config["rounds"]
    report = RoundsReport(config["metric"], params["eval_metric"], config["report_every"], rounds)
    xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")],
              callbacks=[report], verbose_eval=False)


def trial_driver(config: dict[str, Any], *, train, valid, features: list[str],
                 schema: FeatureSchema, metric_name: str, seed: int, report_every: int,
                 workers: int, cpus_per_worker: float, storage_path: str,
                 placement_strategy: str = "PACK") -> None:
    """A Tune trial: a Ray Train ``XGBoostTrainer`` of ``workers`` workers; its reports reach
    Tune through ``TuneReportCallback`` (the booster's checkpoint path with the last). The
    workers' placement group has ``placement_strategy`` (``tune.placement_strategy``)."""
    from ray import tune
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.xgboost import XGBoostTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raylane.model.metrics import METRICS

    params, rounds = booster_params(config, schema, METRICS[metric_name], seed)
    trainer = XGBoostTrainer(
        train_worker,
        train_loop_config={"features": features, "params": params, "rounds": rounds,
                           "metric": metric_name, "report_every": report_every},
        scaling_config=ScalingConfig(num_workers=workers,
                                     resources_per_worker={"CPU": cpus_per_worker},
                                     placement_strategy=placement_strategy),
        datasets={"train": train, "valid": valid},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(name=f"trial-{tune.get_context().get_trial_id()}",
                             storage_path=storage_path, callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


def created_placement_groups() -> set[str]:
    """Ids of the cluster's placement groups still CREATED, from the GCS (no State API, so no
    dashboard needed)."""
    from ray.util import placement_group_table

    return {pg_id for pg_id, info in placement_group_table().items()
            if info.get("state") == "CREATED"}


def remove_placement_group_by_id(pg_id: str) -> bool:
    """Remove the placement group ``pg_id`` (hex) if it is still there; whether it was."""
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    if pg_id not in created_placement_groups():
        return False
    remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))
    return True


class ReleaseTrainGroups(tune.Callback):
    """Removes the placement group of a trial's Ray Train workers once Tune ends the trial.

    Ray Train creates that group from its controller, an actor of the trial, so Ray keeps it
    until the job ends; when Tune stops the trial (ASHA does, even at ``max_t``, before the Train
    run has shut down), only Ray Train's detached cleaner would remove it, and the cleaner learns
    of the controller's death through the State API (the dashboard):
    without it, or when it lags, stopped trials keep their workers' CPUs and the next trials'
    worker groups wait for them forever. The workers name their group in every report, so the
    driver removes it itself (through the GCS) as soon as the trial is over.
    """

    def __init__(self) -> None:
        self.removed: list[str] = []

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._release(trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._release(trial)

    def _release(self, trial) -> None:
        pg_id = (trial.last_result or {}).get(PLACEMENT_GROUP_KEY)
        if pg_id and remove_placement_group_by_id(pg_id):
            self.removed.append(pg_id)


def wait_placement_groups_released(before: set[str], timeout_s: float = 60.0) -> list[str]:
    """Wait until no placement group created since ``before`` is left (Tune and Ray Train
    remove theirs asynchronously); the ones still there at the timeout."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        left = sorted(created_placement_groups() - before)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1.0)
