"""How many data-parallel trials a Ray cluster runs at once.

Each data-parallel trial is a Tune function (a hundredth of a CPU) whose Ray Train run needs
all of ``workers x cpus`` CPUs at once, in a placement group of its own that Tune does not see:
Tune would start as many trial functions as its own tiny requests allow, and their Train runs
would then wait on each other's CPUs. The search is therefore capped from the cluster's CPUs
(as Ray's guide to Train inside Tune advises: ``max_concurrent_trials`` from the limiting
resource), with CPUs left over for Ray Data, and refused with a clear error when not even one
trial's workers fit beside them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from raylane.config import ConfigError

# CPUs kept out of the trials for Ray Data (reading, preparing and scoring blocks) while they
# run; the splits the trials train on are materialized before the search.
DATA_CPUS = 1.0


@dataclass(frozen=True)
class TrialPlan:
    """The search's concurrency and what it was derived from."""

    concurrent: int  # trials (Train runs) at once
    cpus_per_trial: float  # workers x CPUs per worker
    cluster_cpus: float
    data_cpus: float


def plan_trials(cluster_cpus: float, workers: int, cpus_per_worker: float,
                requested: int | None, data_cpus: float = DATA_CPUS) -> TrialPlan:
    """The most trials whose Train workers fit together in ``cluster_cpus`` beside
    ``data_cpus`` for Ray Data, no more than ``requested`` (``tune.max_concurrent_trials``)."""
    per_trial = workers * cpus_per_worker
    room = cluster_cpus - data_cpus
    eps = 1e-9
    if per_trial > room + eps:
        raise ConfigError(
            f"tune.workers_per_trial x tune.cpus_per_trial: one trial needs "
            f"{workers} x {cpus_per_worker:g} = {per_trial:g} CPUs at once for its Ray Train "
            f"workers, and {data_cpus:g} more stay free for Ray Data, but the Ray cluster has "
            f"{cluster_cpus:g} CPUs; lower tune.workers_per_trial or tune.cpus_per_trial, or "
            f"run on a cluster with at least {math.ceil(per_trial + data_cpus)} CPUs")
    fit = int((room + eps) // per_trial)
    concurrent = min(requested, fit) if requested else fit
    return TrialPlan(concurrent=concurrent, cpus_per_trial=per_trial,
                     cluster_cpus=cluster_cpus, data_cpus=data_cpus)


def cluster_cpus() -> float:
    """The connected cluster's CPUs: the most an autoscaling cluster's config allows when Ray
    knows it (what Ray Train checks a worker group against), else the CPUs of the live nodes."""
    import ray

    live = float(ray.cluster_resources().get("CPU", 0.0))
    try:
        from ray._private.state import state

        most = state.get_max_resources_from_cluster_config() or {}
    except Exception:  # private API: an older or newer Ray without it
        most = {}
    return max(live, float(most.get("CPU", 0.0)))
