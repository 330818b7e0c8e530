"""The data-parallel search's concurrency, from the cluster's CPUs (no Ray needed)."""

from __future__ import annotations

import pytest

from raylane.config import ConfigError
from raylane.training.trial_resources import plan_trials


def test_trials_fill_the_cluster_but_one_cpu_for_ray_data():
    # each trial: 2 workers x 1 CPU + 0.01 for the trial function
    assert plan_trials(6, workers=2, cpus_per_worker=1, requested=None).concurrent == 2
    assert plan_trials(9, workers=2, cpus_per_worker=1, requested=None).concurrent == 3
    assert plan_trials(9.05, workers=2, cpus_per_worker=1, requested=None).concurrent == 4
    assert plan_trials(4, workers=2, cpus_per_worker=1.5, requested=None).concurrent == 1


def test_one_trial_runs_when_it_fits_though_no_cpu_is_left_for_ray_data():
    assert plan_trials(2, workers=2, cpus_per_worker=0.5, requested=None).concurrent == 1
    assert plan_trials(2.01, workers=2, cpus_per_worker=1, requested=None).concurrent == 1


def test_the_configured_cap_is_kept_when_lower_and_lowered_when_higher():
    assert plan_trials(16, workers=2, cpus_per_worker=1, requested=3).concurrent == 3
    assert plan_trials(4, workers=2, cpus_per_worker=1, requested=4).concurrent == 1


def test_a_cluster_that_cannot_hold_one_trial_is_refused():
    # 2 workers x 1 CPU and the trial function's 0.01 on 2 CPUs: the workers would never start
    with pytest.raises(ConfigError, match=r"tune\.workers_per_trial x tune\.cpus_per_trial.*"
                       r"2 x 1 = 2 CPUs.*0\.01 for the trial function.*has 2 CPUs"):
        plan_trials(2, workers=2, cpus_per_worker=1, requested=None)
    with pytest.raises(ConfigError, match="has 0 CPUs"):
        plan_trials(0, workers=2, cpus_per_worker=1, requested=None)


def test_fractional_cpus_are_not_lost_to_rounding():
    assert plan_trials(4, workers=3, cpus_per_worker=0.1, requested=None,
                       driver_cpu=0).concurrent == 10
