"""How many data-parallel trials a Ray cluster runs at once.

Each data-parallel trial is a Tune function (a hundredth of a CPU) whose Ray Train run needs
all of ``workers x cpus`` CPUs at once, in a placement group of its own that Tune does not see:
Tune would start as many trial functions as its own tiny requests allow, and their Train runs
would then wait on each other's CPUs. The search is therefore capped from the cluster's CPUs
(as Ray's guide to Train inside Tune advises: ``max_concurrent_trials`` from the limiting
resource), with a CPU left over for Ray Data where the cluster has one to spare, and refused
with a clear error when not even one trial fits: its Train workers would wait forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from raylane.config import ConfigError

# CPUs kept out of the trials for Ray Data while they run, when the cluster has them to spare.
# Only a preference: the splits the trials train on are materialized before the search, and
# handing them to the workers takes zero-CPU tasks, so one trial never waits for Ray Data.
DATA_CPUS = 1.0
# The Tune function of a trial: it only waits on its Ray Train run.
DRIVER_CPU = 0.01


@dataclass(frozen=True)
class TrialPlan:
    """The search's concurrency and what it was derived from."""

    concurrent: int  # trials (Train runs) at once
    cpus_per_trial: float  # workers x CPUs per worker, plus the trial function's
    cluster_cpus: float
    data_cpus: float


def plan_trials(cluster_cpus: float, workers: int, cpus_per_worker: float,
                requested: int | None, data_cpus: float = DATA_CPUS,
                driver_cpu: float = DRIVER_CPU) -> TrialPlan:
    """The most trials whose functions and Train workers fit together in ``cluster_cpus`` with
    ``data_cpus`` to spare (at least one trial when it fits at all), no more than ``requested``
    (``tune.max_concurrent_trials``). Raises ``ConfigError`` when not even one trial fits."""
    per_trial = workers * cpus_per_worker + driver_cpu
    eps = 1e-9
    if per_trial > cluster_cpus + eps:
        raise ConfigError(
            f"tune.workers_per_trial x tune.cpus_per_trial: one trial needs "
            f"{workers} x {cpus_per_worker:g} = {workers * cpus_per_worker:g} CPUs at once for "
            f"its Ray Train workers (and {driver_cpu:g} for the trial function), but the Ray "
            f"cluster has {cluster_cpus:g} CPUs, so its workers could never start; lower "
            f"tune.workers_per_trial or tune.cpus_per_trial (fractions are allowed), or run on "
            f"a cluster with more CPUs")
    fit = max(1, int((cluster_cpus - data_cpus + eps) // per_trial))
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
