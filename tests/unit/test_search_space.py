"""Search-space building: every distribution type of the config becomes the Tune domain it names,
and ``max_reports`` (ASHA's max_t) follows the longest trial the space allows. No Ray cluster."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np
import pytest
from ray.tune.search.sample import Categorical, Float, Integer, Quantized

from raylane.config import Distribution, parse_config
from raylane.model.families import get_family
from raylane.training.tuning import max_reports, param_space


def config(family: str = "xgboost", report_every: int = 10, **model: Any):
    return parse_config({
        "data": {"path": "unused.csv", "target": "y", "task": "classification"},
        "model": {"family": family, "report_every": report_every, **model},
        "mlflow": {"registered_model": "m"},
    })


# type -> (xgboost parameter, distribution, Tune domain class, base sampler, q, integers?)
CASES = {
    "uniform": ("subsample", {"lower": 0.6, "upper": 1.0}, Float, "_Uniform", None, False),
    "quniform": ("subsample", {"lower": 0.5, "upper": 1.0, "q": 0.1}, Float, "_Uniform", 0.1,
                 False),
    "loguniform": ("learning_rate", {"lower": 0.01, "upper": 0.3}, Float, "_LogUniform", None,
                   False),
    "qloguniform": ("min_child_weight", {"lower": 0.5, "upper": 20, "q": 0.5}, Float,
                    "_LogUniform", 0.5, False),
    "randint": ("max_depth", {"lower": 2.0, "upper": 8.0}, Integer, "_Uniform", None, True),
    "qrandint": ("n_estimators", {"lower": 50, "upper": 300, "q": 10}, Integer, "_Uniform", 10,
                 True),
    "lograndint": ("max_bin", {"lower": 16, "upper": 256}, Integer, "_LogUniform", None, True),
    "qlograndint": ("n_estimators", {"lower": 10, "upper": 400, "q": 10}, Integer, "_LogUniform",
                    10, True),
}


def test_every_distribution_type_is_covered():
    types = typing.get_args(Distribution.model_fields["type"].annotation)
    assert set(types) == {*CASES, "choice", "grid"}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_numeric_distribution_becomes_its_tune_domain(kind):
    name, bounds, domain_cls, base, q, integers = CASES[kind]
    space = param_space(config(search_space={name: {"type": kind, **bounds}}))
    domain = space[name]
    assert type(domain) is domain_cls
    assert (domain.lower, domain.upper) == (bounds["lower"], bounds["upper"])
    sampler = domain.get_sampler()
    if q is None:
        assert type(sampler).__name__ == base
    else:
        assert isinstance(sampler, Quantized) and sampler.q == q
        assert type(sampler.sampler).__name__ == base
    values = np.asarray(domain.sample(size=200, random_state=0))
    assert values.min() >= bounds["lower"] and values.max() <= bounds["upper"]
    if integers:
        assert all(isinstance(v, int | np.integer) for v in values)
    if q is not None:
        np.testing.assert_allclose(values / q, np.round(values / q), atol=1e-9)
    if kind in ("randint", "lograndint"):
        assert values.max() < bounds["upper"]  # Tune's randint excludes the upper bound


def test_choice_grid_fixed_values_and_params():
    space = param_space(config(
        params={"n_jobs": 1, "max_depth": 3, "tree_method": "hist"},
        search_space={
            "booster": {"type": "choice", "values": ["gbtree", "dart"]},
            "max_depth": {"type": "grid", "values": [3, 5]},  # the search space wins over params
            "learning_rate": 0.1,  # a plain value is fixed
        },
    ))
    assert isinstance(space["booster"], Categorical)
    assert space["booster"].categories == ["gbtree", "dart"]
    assert space["max_depth"] == {"grid_search": [3, 5]}
    assert space["learning_rate"] == 0.1
    assert (space["n_jobs"], space["tree_method"]) == (1, "hist")
    assert set(space) == {"booster", "max_depth", "learning_rate", "n_jobs", "tree_method"}


@pytest.mark.parametrize(("family", "every", "model", "expected"), [
    ("xgboost", 10, {"search_space": {"n_estimators": {"type": "qrandint", "lower": 50,
                                                       "upper": 300, "q": 10}}}, 30),
    ("xgboost", 25, {"search_space": {"n_estimators": {"type": "choice", "values": [50, 125]}}},
     5),
    ("xgboost", 10, {"search_space": {"n_estimators": {"type": "grid", "values": [20, 45]}}}, 5),
    ("xgboost", 10, {"search_space": {"n_estimators": 35}}, 4),
    ("xgboost", 10, {"params": {"n_estimators": 45}}, 5),
    ("xgboost", 10, {"params": {"n_estimators": 5}}, 1),
    ("xgboost", 10, {}, 20),  # the family default, 200 rounds
    ("hist_gradient_boosting", 10, {}, 20),  # 200 iterations
    ("random_forest", 25, {}, 4),  # 100 trees
    ("random_forest", 7, {"search_space": {"max_depth": {"type": "randint", "lower": 2,
                                                         "upper": 9}}}, 15),
    ("linear", 10, {"search_space": {"C": {"type": "loguniform", "lower": 0.01, "upper": 10}}},
     1),
])
def test_max_reports_follows_the_longest_trial(family, every, model, expected):
    assert max_reports(config(family, every, **model), get_family(family), "classification") \
        == expected
