"""Every ``raylane.*`` tag name: on MLflow runs and model versions, and the console's Ray job
metadata. The contract between training, release, monitoring, continuous training and the
console; the values are stored in users' registries, so they never change (add, don't rename).
"""

from __future__ import annotations

# --- a training run (the parent) and its trials
ROLE = "raylane.role"  # "trial", "continuous-training"
TASK = "raylane.task"
FAMILY = "raylane.family"
DATASET_DIGEST = "raylane.dataset.digest"
DATASET_ROWS = "raylane.dataset.rows"
POS_LABEL = "raylane.pos_label"
DIAGNOSIS = "raylane.diagnosis"
GATES = "raylane.gates"
TRIAL_LOGGING = "raylane.trial_logging"
TRAINING_RUN_ID = "raylane.training_run_id"
WORKERS_PER_TRIAL = "raylane.workers_per_trial"  # data-parallel trials (tune.workers_per_trial)
REGISTERED_MODEL = "raylane.registered_model"
MODEL_VERSION = "raylane.model_version"
MODEL_URI = "raylane.model_uri"

# --- the export and the promotion decision (run and version)
PARITY = "raylane.parity"
ONNX_SHA256 = "raylane.onnx.sha256"  # model.onnx as registered; replicas verify it
PARITY_MAX_ABS_DIFF = "raylane.parity.max_abs_diff"
DECISION = "raylane.decision"
DECISION_REASONS = "raylane.decision.reasons"
DECISION_RETRY = "raylane.decision.retry"
CHAMPION_VERSION = "raylane.champion.version"
HOLDOUT_PREFIX = "raylane.holdout."  # + a metric name, or the holdout's definition below
HOLDOUT_KEY = "raylane.holdout.key"
HOLDOUT_HASH_SEED = "raylane.holdout.hash_seed"
HOLDOUT_FRACTION = "raylane.holdout.fraction"
HOLDOUT_TIME_COLUMN = "raylane.holdout.time_column"
JUDGING_PREFIX = "raylane.judging."
JUDGING_METRIC = "raylane.judging.metric"
JUDGING_ROWS = "raylane.judging.rows"
JUDGING_CHALLENGER = "raylane.judging.challenger"
JUDGING_CHAMPION = "raylane.judging.champion"
JUDGING_CHAMPION_VERSION = "raylane.judging.champion.version"
JUDGING_MIN_IMPROVEMENT = "raylane.judging.min_improvement"
JUDGING_SCORED_WITH = "raylane.judging.scored_with"

# --- monitoring (the version's reference profile, the monitor's runs)
REFERENCE = "raylane.reference"
MONITOR_MODEL_NAME = "raylane.monitor.model_name"
MONITOR_MODEL_VERSION = "raylane.monitor.model_version"
MONITOR_MODEL_URI = "raylane.monitor.model_uri"
MONITOR_SINCE = "raylane.monitor.since"
MONITOR_UNTIL = "raylane.monitor.until"
MONITOR_DECISION = "raylane.monitor.decision"
MONITOR_DRIFTED_COLUMNS = "raylane.monitor.drifted_columns"
MONITOR_LAST_RUN_ID = "raylane.monitor.last_run_id"

# --- continuous training (its run, and links from the monitor's run and the new version)
CT_TRIGGER = "raylane.ct.trigger"
CT_MODEL_URI = "raylane.ct.model_uri"
CT_RUN_ID = "raylane.ct.run_id"
CT_DECISION = "raylane.ct.decision"
MONITORING_RUN_ID = "raylane.monitoring.run_id"
MONITORING_DECISION = "raylane.monitoring.decision"
MONITORING_REASONS = "raylane.monitoring.reasons"

# --- promotions and demotions by hand (the console)
PROMOTION_BY = "raylane.promotion.by"
PROMOTION_REASON = "raylane.promotion.reason"
PROMOTION_AT = "raylane.promotion.at"
PROMOTION_PREVIOUS_CHAMPION = "raylane.promotion.previous_champion"
PROMOTION_ACTION = "raylane.promotion.action"
DEMOTION_BY = "raylane.demotion.by"
DEMOTION_REASON = "raylane.demotion.reason"
DEMOTION_AT = "raylane.demotion.at"
DEMOTION_REPLACED_BY = "raylane.demotion.replaced_by"

# --- Ray job metadata of the jobs the console submits
LEASE_PREFIX = "raylane.lease."  # + the lease name: a tag of the leases experiment

JOB_STARTED_BY = "raylane.console"  # what the console started ("train")
JOB_CONFIG = "raylane.config"
JOB_BY = "raylane.by"
JOB_DEADLINE_S = "raylane.deadline_s"  # the job's time limit, and when it ends
JOB_DEADLINE = "raylane.deadline"


def holdout_metric(metric: str) -> str:
    """The tag holding the challenger's holdout score in ``metric``."""
    return HOLDOUT_PREFIX + metric


def champion_holdout_metric(metric: str) -> str:
    """The tag holding the then champion's holdout score in ``metric``."""
    return f"raylane.champion.holdout.{metric}"
