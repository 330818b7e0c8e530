"""The distributed hyperparameter search: a Ray Tune ``Tuner`` over one model family."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from raylane.config import Distribution, PipelineConfig
from raylane.data.read import PreparedData
from raylane.model.families import Family, get_family
from raylane.model.metrics import DEFAULT_METRIC, METRICS, Metric
from raylane.model.tags import ROLE
from raylane.tracking.trials import BatchedMLflowLoggerCallback
from raylane.training import interrupts
from raylane.training.fit import train_trial
from raylane.training.preprocessed import PreprocessedSplits, preprocess

_SAMPLERS = {
    "uniform": lambda d: tune.uniform(d.lower, d.upper),
    "quniform": lambda d: tune.quniform(d.lower, d.upper, d.q),
    "loguniform": lambda d: tune.loguniform(d.lower, d.upper),
    "qloguniform": lambda d: tune.qloguniform(d.lower, d.upper, d.q),
    "randint": lambda d: tune.randint(int(d.lower), int(d.upper)),
    "qrandint": lambda d: tune.qrandint(int(d.lower), int(d.upper), int(d.q)),
    "lograndint": lambda d: tune.lograndint(int(d.lower), int(d.upper)),
    "qlograndint": lambda d: tune.qlograndint(int(d.lower), int(d.upper), int(d.q)),
    "choice": lambda d: tune.choice(d.values),
    "grid": lambda d: tune.grid_search(d.values),
}


@dataclass
class SearchOutcome:
    """What the search found: the best configuration and every trial's last result."""

    best_params: dict[str, Any]
    best_valid_score: float
    best_steps: int | None
    trials: pd.DataFrame
    experiment_path: str
    errored_trials: int


def param_space(config: PipelineConfig) -> dict[str, Any]:
    """Tune's param_space: the config's distributions plus its fixed params."""
    space: dict[str, Any] = dict(config.model.params)
    for name, value in config.model.search_space.items():
        space[name] = _SAMPLERS[value.type](value) if isinstance(value, Distribution) else value
    return space


def tuning_metric(config: PipelineConfig, task: str) -> Metric:
    name = config.tune.metric or DEFAULT_METRIC[task]
    metric = METRICS[name]
    if metric.task != task:
        raise ValueError(f"tune.metric: {name!r} is a {metric.task} metric but the task is {task}")
    return metric


def max_reports(config: PipelineConfig, family: Family, task: str) -> int:
    """How many times the longest trial reports: ASHA's ``max_t``."""
    if family.steps_param is None:
        return 1
    steps = family.defaults(task).get(family.steps_param, 100)
    spec = config.model.search_space.get(family.steps_param, config.model.params.get(
        family.steps_param, steps))
    if isinstance(spec, Distribution):
        steps = spec.upper if spec.values is None else max(spec.values)
    else:
        steps = spec
    return max(1, math.ceil(float(steps) / config.model.report_every))


def make_trainable(config: PipelineConfig, data: PreparedData,
                   splits: PreprocessedSplits | None = None):
    """The trial function and its resources, with the preprocessed splits placed once in the
    object store (every trial reads the same arrays in place).

    ``splits`` are the job's (:func:`raylane.training.preprocessed.preprocess` for this family);
    without them the preprocessing is fitted here, once for the search.
    """
    family = get_family(config.model.family)
    metric = tuning_metric(config, data.schema.task)
    if splits is None:
        splits = preprocess(data, family)
    elif not splits.fits(family):
        raise ValueError(f"{family.name}: the splits are preprocessed with scale_numeric="
                         f"{splits.scale_numeric}; the family needs {family.scale_numeric}")
    trainable = tune.with_parameters(
        train_trial, splits=splits, family_name=family.name, metric_name=metric.name,
        seed=config.seed, report_every=config.model.report_every,
    )
    return tune.with_resources(trainable, {"cpu": config.tune.cpus_per_trial})


def build_tuner(
    config: PipelineConfig, data: PreparedData, parent_run_id: str, tracking_uri: str,
    experiment_name: str, run_dir: Path | str, points_to_evaluate: list[dict] | None = None,
    extra_callbacks: Sequence[tune.Callback] = (), trainable: Any = None,
    reuse_actors: bool = True, splits: PreprocessedSplits | None = None,
) -> tune.Tuner:
    """A fresh Tuner for this config, keeping its state in ``run_dir`` (a local directory, or a
    URI such as ``s3://bucket/ray_results/name``, written through pyarrow); ``trainable`` replaces
    the one-process trial function (the data-parallel job passes its own), whose trials share
    ``splits`` (see :func:`make_trainable`).

    ``points_to_evaluate`` are configurations to try first (e.g. a known good one, or the same
    list another search tried, for a fair comparison).
    """
    family = get_family(config.model.family)
    task = data.schema.task
    metric = tuning_metric(config, task)
    mode = metric.mode
    tune_metric = f"valid_{metric.name}"
    points_to_evaluate = points_to_evaluate or None
    if config.tune.scheduler.type == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=max_reports(config, family, task),
            grace_period=config.tune.scheduler.grace_period,
            reduction_factor=config.tune.scheduler.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    if config.tune.search_alg == "optuna":
        search_alg = OptunaSearch(seed=config.seed, points_to_evaluate=points_to_evaluate)
    else:
        search_alg = BasicVariantGenerator(
            points_to_evaluate=points_to_evaluate, random_state=config.seed,
            # Tune does not apply max_concurrent_trials to a generator passed in; it caps itself.
            max_concurrent=config.tune.max_concurrent_trials or 0,
        )
    callbacks = [*extra_callbacks, StopCallback(),
        BatchedMLflowLoggerCallback(
            tracking_uri=tracking_uri,
            experiment_name=experiment_name,
            # Child runs nest under the job's parent run in the MLflow UI.
            tags={"mlflow.parentRunId": parent_run_id, ROLE: "trial"},
        )
    ]
    return tune.Tuner(
        trainable or make_trainable(config, data, splits),
        param_space=param_space(config),
        tune_config=tune.TuneConfig(
            metric=tune_metric,
            mode=mode,
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=config.tune.num_samples,
            max_concurrent_trials=config.tune.max_concurrent_trials,
            time_budget_s=config.tune.time_budget_s,
            # Keep trial workers between trials: no new process, imports or dataset fetch each.
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(
            name=experiment_name_of(run_dir),
            storage_path=storage_of(run_dir),
            failure_config=tune.FailureConfig(max_failures=config.tune.max_failures),
            callbacks=callbacks,
            verbose=1,  # Tune's own progress table: trials, params, metric, status
        ),
    )


def _base_name(config: PipelineConfig) -> str:
    return config.tune.name or f"{config.mlflow.experiment}-{config.mlflow.registered_model}"


def is_uri(location: str) -> bool:
    """Whether ``location`` is a URI (``s3://...``) rather than a local path."""
    return "://" in location


def storage_of(run_dir: Path | str) -> str:
    return str(run_dir).rstrip("/").rpartition("/")[0]


def experiment_name_of(run_dir: Path | str) -> str:
    return str(run_dir).rstrip("/").rpartition("/")[2]


def new_run_location(config: PipelineConfig) -> Path | str:
    """A fresh experiment location: :func:`new_run_dir` for a local ``tune.storage_path``, else
    a new name under the URI (object storage; Tune creates it, and ``--resume``, which reads a
    local pointer file, does not apply)."""
    storage = config.tune.storage_path
    if not is_uri(storage):
        return new_run_dir(config)
    return f"{storage.rstrip('/')}/{_base_name(config)}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(config: PipelineConfig) -> Path:
    """A fresh experiment directory, remembered as the latest for ``--resume``."""
    storage = Path(config.tune.storage_path).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    run_dir = storage / f"{_base_name(config)}-{time.strftime('%Y%m%d-%H%M%S')}"
    (storage / f"{_base_name(config)}.latest").write_text(run_dir.name)
    return run_dir


def latest_run_dir(config: PipelineConfig) -> Path:
    """The experiment directory of the last search started with this config."""
    storage = Path(config.tune.storage_path).resolve()
    pointer = storage / f"{_base_name(config)}.latest"
    if not pointer.exists():
        raise interrupts.ResumeError(
            f"no search to resume under {storage} ({pointer.name} is missing)")
    return storage / pointer.read_text().strip()


def can_restore(run_dir: Path) -> bool:
    """Whether Tune saved a search state in ``run_dir`` (a job stopped early may not have)."""
    return tune.Tuner.can_restore(str(run_dir))


def restore_tuner(config: PipelineConfig, data: PreparedData, run_dir: Path,
                  splits: PreprocessedSplits | None = None) -> tune.Tuner:
    """Resume an interrupted search: finished trials are kept, unfinished and errored re-run."""
    return tune.Tuner.restore(
        str(run_dir),
        trainable=make_trainable(config, data, splits),
        resume_unfinished=True,
        restart_errored=True,
        param_space=param_space(config),
    )


class StopCallback(tune.Callback):
    """Lets a stop reach Tune (see :mod:`raylane.training.interrupts`), and the test-only trial
    holds.

    A signal that arrives before Tune has installed its SIGUSR1 handler is forwarded at the next
    step. The ``trial`` hold waits at the first result of a trial started after another one
    finished, so a test can stop a search that is surely running with a finished trial;
    ``trials_done_<n>`` waits at the first result after ``n`` trials finished (a second point
    in the same search). While the driver waits, the trial that reported waits too (Tune takes
    its next result only then): it is surely running.
    """

    def __init__(self) -> None:
        self.completed = 0

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        interrupts.forward_to_tune()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.completed += 1

    def on_trial_result(self, iteration: int, trials: list, trial, result, **info) -> None:
        if self.completed >= 1:
            interrupts.hold("trial", {"trial_id": trial.trial_id, "pid": result.get("pid")})
        interrupts.hold(f"trials_done_{self.completed}")


def run_search(tuner: tune.Tuner) -> tune.ResultGrid:
    """``tuner.fit()``, raising :class:`raylane.training.interrupts.Stopped` if SIGINT or SIGTERM
    stopped it.

    Tune stops gracefully on SIGUSR1, saves its state and returns normally from ``fit()``;
    continuing would export a model chosen from a partial search. So a signal during the search
    is forwarded to Tune as SIGUSR1 and raised once ``fit()`` returned. Tune's own SIGINT
    handler is kept out (it would hide the signal from us).
    """
    tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        with interrupts.deferred():
            return tuner.fit()
    finally:
        if tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def summarize(results: tune.ResultGrid, metric: Metric) -> SearchOutcome:
    """Best trial (by its last reported validation score) and the trials table: each trial's
    last reported result, the one the best is chosen by (a trial's best row would show an
    earlier round whenever its score later fell back or tied)."""
    tune_metric = f"valid_{metric.name}"
    best = results.get_best_result(metric=tune_metric, mode=metric.mode, scope="last")
    table = results.get_dataframe()
    keep = [c for c in table.columns if c.startswith("config/")] + [
        c for c in ("trial_id", tune_metric, "steps", "training_iteration", "fit_seconds",
                    "time_total_s") if c in table.columns
    ]
    return SearchOutcome(
        best_params=dict(best.config),
        best_valid_score=float(best.metrics[tune_metric]),
        best_steps=int(best.metrics.get("steps", 0)) or None,
        trials=table[keep].sort_values(tune_metric, ascending=metric.mode == "min"),
        experiment_path=results.experiment_path,
        errored_trials=len(results.errors),
    )
