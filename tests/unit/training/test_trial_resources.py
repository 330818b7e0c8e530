"""The data-parallel search's concurrency, from the cluster's CPUs (no Ray needed)."""

from __future__ import annotations

import pytest

from raylane.config import ConfigError
from raylane.training.trial_resources import plan_trials


def test_trials_fill_the_cluster_but_one_cpu_for_ray_data():
    assert plan_trials(6, workers=2, cpus_per_worker=1, requested=None).concurrent == 2
    assert plan_trials(9, workers=2, cpus_per_worker=1, requested=None).concurrent == 4
    assert plan_trials(4, workers=2, cpus_per_worker=1.5, requested=None).concurrent == 1


def test_the_configured_cap_is_kept_when_lower_and_lowered_when_higher():
    assert plan_trials(16, workers=2, cpus_per_worker=1, requested=3).concurrent == 3
    assert plan_trials(4, workers=2, cpus_per_worker=1, requested=4).concurrent == 1


def test_a_cluster_that_cannot_hold_one_trial_beside_ray_data_is_refused():
    with pytest.raises(ConfigError, match=r"tune\.workers_per_trial x tune\.cpus_per_trial.*"
                       r"2 x 1 = 2 CPUs.*1 more stay free for Ray Data.*has 2 CPUs.*at least 3"):
        plan_trials(2, workers=2, cpus_per_worker=1, requested=None)
    with pytest.raises(ConfigError, match="has 0 CPUs"):
        plan_trials(0, workers=2, cpus_per_worker=1, requested=None)


def test_fractional_cpus_are_not_lost_to_rounding():
    # 0.1 x 3 is 0.30000000000000004 in floats: ten such trials still fit in 3 + 1 CPUs
    assert plan_trials(4, workers=3, cpus_per_worker=0.1, requested=None).concurrent == 10
