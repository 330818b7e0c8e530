"""The job's typed config: YAML in, validated before any work starts, ``--set key=value`` on top."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from raylane.locations import LocationError, check_location
from raylane.model.families import FAMILIES, FAMILY_ALIASES, get_family
from raylane.model.metrics import METRICS
from raylane.model.schema import Task


class ConfigError(ValueError):
    """A config problem; the message names the key and what was expected."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    path: str | list[str] = Field(
        description="A CSV/Parquet file, a directory, a glob or a list of them; local paths or "
        "pyarrow/fsspec URIs (s3://...)")
    target: str
    task: Task | None = Field(None, description="Inferred from the target when omitted")
    columns: list[str] | None = Field(None, description="Feature columns to use (default: all)")
    drop: list[str] = Field(default_factory=list, description="Columns to leave out")
    categorical: list[str] = Field(
        default_factory=list, description="Numeric columns to treat as categories"
    )
    max_categories: int = Field(200, ge=2)
    valid_fraction: float = Field(0.2, gt=0, lt=0.5)
    holdout_fraction: float = Field(0.2, gt=0, lt=0.5)
    sample_rows: int | None = Field(None, ge=100, description="Sample this many rows first")
    pos_label: str | int | float | bool | None = Field(
        None, description="Positive class of binary metrics (f1); default: the minority class "
        "of the training split"
    )


class Distribution(_Strict):
    """One hyperparameter's search distribution (Ray Tune's sampling functions)."""

    type: Literal[
        "uniform", "quniform", "loguniform", "qloguniform", "randint", "qrandint",
        "lograndint", "qlograndint", "choice", "grid",
    ]
    lower: float | None = None
    upper: float | None = None
    q: float | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        if self.type in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"'{self.type}' needs a non-empty 'values' list")
            return self
        if self.lower is None or self.upper is None:
            raise ValueError(f"'{self.type}' needs 'lower' and 'upper'")
        if self.lower >= self.upper:
            raise ValueError(f"'lower' ({self.lower}) must be below 'upper' ({self.upper})")
        if self.type.startswith("q") and not self.q:
            raise ValueError(f"'{self.type}' needs 'q'")
        if "log" in self.type and self.lower <= 0:
            raise ValueError(f"'{self.type}' needs 'lower' > 0")
        return self


SearchValue = Distribution | int | float | str | bool | list | None


class ModelConfig(_Strict):
    @field_validator("search_space", mode="before")
    @classmethod
    def _parse_space(cls, space: Any) -> Any:
        """Mappings are distributions, anything else a fixed value; errors name the parameter."""
        if not isinstance(space, dict):
            return space
        parsed = {}
        for name, value in space.items():
            if isinstance(value, dict):
                try:
                    value = Distribution.model_validate(value)
                except ValidationError as exc:
                    problems = "; ".join(
                        ".".join([name, *(str(p) for p in e["loc"])]) + ": "
                        + ("unknown key" if e["type"] == "extra_forbidden"
                           else e["msg"].removeprefix("Value error, "))
                        for e in exc.errors()
                    )
                    raise ValueError(problems) from None
            parsed[name] = value
        return parsed

    family: str = Field(description=f"One of {sorted([*FAMILIES, *FAMILY_ALIASES])}")
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed hyperparameters")
    search_space: dict[str, SearchValue] = Field(
        default_factory=dict, description="name: {type, lower, upper, q, values} or a fixed value"
    )
    report_every: int = Field(10, ge=1, description="Report to Tune every N boosting rounds/trees")


class SchedulerConfig(_Strict):
    type: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(2, ge=1, description="Reports before ASHA may stop a trial")
    reduction_factor: float = Field(3.0, gt=1)


class TuneConfig(_Strict):
    num_samples: int = Field(16, ge=1)
    max_concurrent_trials: int | None = Field(None, ge=1)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    search_alg: Literal["random", "optuna"] = "random"
    cpus_per_trial: float = Field(1.0, gt=0)
    workers_per_trial: int = Field(
        1, ge=1, description="Data-parallel workers per trial (Ray Train); 1: each trial fits "
        "in one process on a table read whole by the driver")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_SPREAD"] = Field(
        "PACK", description="How a data-parallel trial's Ray Train workers are placed on nodes "
        "(Ray's placement group strategy): PACK on as few nodes as fit, SPREAD over nodes where "
        "possible, STRICT_SPREAD one per node or not at all; only with workers_per_trial > 1")
    time_budget_s: float | None = Field(None, gt=0)
    metric: str | None = Field(None, description=f"One of {sorted(METRICS)}")
    max_failures: int = Field(2, ge=0, description="Retries of a failed trial")
    storage_path: str = Field("ray_results", description="Where Tune keeps experiment state")
    name: str | None = Field(None, description="Experiment name (default: the MLflow experiment)")


class MlflowConfig(_Strict):
    tracking_uri: str | None = Field(
        None, description="Default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db"
    )
    experiment: str = "raylane"
    registered_model: str = Field(..., min_length=1)
    run_name: str | None = None


class GatesConfig(_Strict):
    min_holdout: dict[str, float] = Field(
        default_factory=dict, description="Holdout metric floors, e.g. {roc_auc: 0.8}"
    )
    max_holdout: dict[str, float] = Field(
        default_factory=dict, description="Holdout metric ceilings, e.g. {rmse: 900}"
    )
    must_beat_baseline: bool = True
    max_overfit_gap: float = Field(
        0.25, ge=0, description="A (train - validation) gap of the tuning metric, relative to the "
        "validation score, above which the model is diagnosed as overfit"
    )
    reject_overfit: bool = Field(False, description="Refuse promotion of a model diagnosed overfit")


class ExportConfig(_Strict):
    parity_atol: float = Field(1e-4, ge=0)
    parity_rtol: float = Field(1e-3, ge=0)
    parity_max_mismatch_fraction: float = Field(0.001, ge=0, le=1)


class JudgingConfig(_Strict):
    """How a challenger is judged against the champion (raylane/release/judging.py)."""

    key_columns: list[str] | None = Field(
        None, description="Columns whose values identify a row for the stable holdout "
        "(default: every feature column and the target)")
    hash_seed: int = Field(0, description="Seed of the row hash; changing it moves the holdout")
    time_column: str | None = Field(
        None, description="A column ordering rows in time: the judging rows are the newest "
        "(not a feature; it is dropped before training)")
    newest_fraction: float = Field(0.5, gt=0, le=1, description="With time_column: the newest "
                                   "share of labelled rows the judging rows come from")
    min_improvement: float = Field(
        0.0, ge=0, description="How much better (in the metric's units) the challenger must "
        "score than the champion to replace it; ties and near-ties keep the champion")
    min_rows: int = Field(30, ge=1, description="Fewest judging rows to compare on")


class DriftConfig(_Strict):
    """Per-column drift methods and thresholds (Evidently's defaults and rules)."""

    drift_share: float = Field(0.5, gt=0, le=1, description="Dataset drift when at least this "
                               "share of the columns drift")
    stat_test_max_rows: int = Field(1000, ge=1, description="Up to this many reference rows the "
                                    "p-value tests (KS, chi-square, z) are used, above it the "
                                    "distances (Wasserstein, Jensen-Shannon), as Evidently does")
    ks_threshold: float = Field(0.05, gt=0, lt=1, description="KS p-value at or below which")
    chisquare_threshold: float = Field(0.05, gt=0, lt=1, description="Chi-square / z-test p-value")
    wasserstein_threshold: float = Field(0.1, gt=0, description="Normed Wasserstein distance")
    jensenshannon_threshold: float = Field(0.1, gt=0, le=1, description="Jensen-Shannon distance")
    psi_threshold: float = Field(0.1, gt=0, description="PSI reported as drifted at or above this")
    missing_rate_tolerance: float = Field(0.05, ge=0, le=1, description="Absolute change of a "
                                          "column's missing share flagged in the report")
    columns: list[str] | None = Field(None, description="Columns to check (default: all features)")


class TriggersConfig(_Strict):
    """When a monitoring report decides ``retrain``."""

    dataset_drift: bool = Field(True, description="Retrain on dataset drift")
    prediction_drift: bool = Field(False, description="Retrain when the output distribution drifts")
    performance_metric: str | None = Field(None, description="Live metric compared with the "
                                           "version's holdout figure (default: the task's)")
    performance_tolerance: float = Field(0.05, ge=0, description="Retrain when the live metric is "
                                         "worse than the holdout figure by more than this")
    min_rows: int = Field(500, ge=1, description="Fewer logged rows in the window: no decision")
    min_labelled_rows: int = Field(100, ge=1, description="Fewer labelled rows: no performance")

    @field_validator("performance_metric")
    @classmethod
    def _known_metric(cls, value: str | None) -> str | None:
        if value is not None and value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; expected one of {sorted(METRICS)}")
        return value


class WindowConfig(_Strict):
    """Which logged rows a report reads (``--since`` / ``--until`` override it)."""

    since_last_report: bool = Field(False, description="Start where the last report ended")
    lookback_hours: float | None = Field(None, gt=0, description="Only the last N hours")


class MonitoringConfig(_Strict):
    """Drift and live-performance monitoring of the served version (``ray_jobs.monitor``)."""

    experiment: str | None = Field(None, description="Default: '<mlflow.experiment>-monitoring'")
    model_uri: str | None = Field(None, description="Default: models:/<registered_model>@champion")
    reference_rows: int = Field(5000, ge=100, description="Training rows kept as the reference")
    max_rows: int | None = Field(None, ge=100, description="Sample the window down to this many")
    drift: DriftConfig = Field(default_factory=DriftConfig)
    triggers: TriggersConfig = Field(default_factory=TriggersConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)


class PipelineConfig(_Strict):
    data: DataConfig
    model: ModelConfig
    tune: TuneConfig = Field(default_factory=TuneConfig)
    mlflow: MlflowConfig
    gates: GatesConfig = Field(default_factory=GatesConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    judging: JudgingConfig = Field(default_factory=JudgingConfig)


    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    seed: int = 0

    @model_validator(mode="after")
    def _check_model(self) -> PipelineConfig:
        try:
            family = get_family(self.model.family)
        except KeyError:
            raise ValueError(
                f"model.family: unknown family {self.model.family!r}; expected one of "
                f"{sorted([*FAMILIES, *FAMILY_ALIASES])}"
            ) from None
        tasks = [self.data.task] if self.data.task else ["classification", "regression"]
        known = set.intersection(*(family.hyperparameters(t) for t in tasks))
        for section in ("params", "search_space"):
            for key in getattr(self.model, section):
                if key not in known:
                    raise ValueError(
                        f"model.{section}.{key}: not a hyperparameter of {family.name}; expected "
                        f"one of {sorted(known)}"
                    )
        if self.tune.workers_per_trial > 1:
            if family.name != "xgboost":
                raise ValueError(f"tune.workers_per_trial: data-parallel trials train xgboost "
                                 f"only; model.family is {family.name!r}")
            if self.judging.time_column:
                raise ValueError("judging.time_column: not supported with "
                                 "tune.workers_per_trial > 1 (the holdout is hashed per row)")
        elif "://" in self.tune.storage_path:
            raise ValueError(f"tune.storage_path: {self.tune.storage_path!r} is a URI; object "
                             "storage needs tune.workers_per_trial > 1 (the one-process job "
                             "keeps its --resume state in a local directory)")
        elif self.tune.placement_strategy != "PACK":
            raise ValueError(f"tune.placement_strategy: {self.tune.placement_strategy!r} places "
                             "a data-parallel trial's workers; it needs tune.workers_per_trial "
                             "> 1 (a one-process trial has nothing to place)")
        if self.tune.metric and self.tune.metric not in METRICS:
            raise ValueError(f"tune.metric: unknown metric {self.tune.metric!r}; expected one "
                             f"of {sorted(METRICS)}")
        for section in ("min_holdout", "max_holdout"):
            for key in getattr(self.gates, section):
                if key not in METRICS:
                    raise ValueError(f"gates.{section}.{key}: unknown metric; expected one of "
                                     f"{sorted(METRICS)}")
        return self

    @property
    def tracking_uri(self) -> str:
        return (
            self.mlflow.tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{Path('mlflow.db').resolve()}"
        )


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides; each value is parsed as YAML (``3``, ``[a]``)."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, override and validate a pipeline config; raise ConfigError naming the bad key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw = apply_overrides(raw, overrides or [])
    return parse_config(raw, source=str(path))


def parse_config(raw: dict[str, Any], source: str = "config") -> PipelineConfig:
    """Validate ``raw``, then check every location it names against the operator's allowlist
    (raylane/locations.py) before anything reads it."""
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid config\n" + format_errors(exc)) from None
    problems = []
    for field, location in config_locations(config).items():
        try:
            check_location(field, location)
        except LocationError as exc:
            problems.append(f"  {exc}")
    if problems:
        raise ConfigError(f"{source}: invalid config\n" + "\n".join(problems))
    return config


def config_locations(config: PipelineConfig) -> dict[str, str]:
    """Every data or log location the config names, by its dotted key."""
    paths = config.data.path
    named = {
        **({f"data.path[{i}]": p for i, p in enumerate(paths)} if isinstance(paths, list)
           else {"data.path": paths}),
        "mlflow.tracking_uri": config.mlflow.tracking_uri,
        "tune.storage_path": config.tune.storage_path,
        "monitoring.model_uri": config.monitoring.model_uri,
    }
    return {field: value for field, value in named.items() if value is not None}


def format_errors(exc: ValidationError) -> str:
    """One line per problem: ``key.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = f" (got {err['input']!r})" if err["type"] not in ("missing", "extra_forbidden") and \
            not isinstance(err.get("input"), dict) else ""
        lines.append(f"  {loc}: {msg}{got}" if loc else f"  {msg}{got}")
    return "\n".join(lines)
