"""tune.workers_per_trial and a data.path list: what the config accepts and refuses, by name."""

from __future__ import annotations

import pytest

from raylane.config import ConfigError, parse_config


def _raw(**over) -> dict:
    raw = {"data": {"path": ["a.parquet", "b/"], "target": "y"},
           "model": {"family": "xgboost"}, "tune": {"workers_per_trial": 2},
           "mlflow": {"registered_model": "m"}}
    for key, value in over.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return raw


def test_a_list_of_paths_and_workers_are_accepted():
    config = parse_config(_raw())
    assert config.data.path == ["a.parquet", "b/"] and config.tune.workers_per_trial == 2
    assert parse_config(_raw(tune__workers_per_trial=1)).tune.workers_per_trial == 1


@pytest.mark.parametrize(("over", "message"), [
    ({"model__family": "random_forest"}, "tune.workers_per_trial: data-parallel trials train "
                                          "xgboost only"),
    ({"judging__time_column": "ts"}, "judging.time_column: not supported"),
    ({"tune__workers_per_trial": 0}, "tune.workers_per_trial"),
])
def test_what_the_data_parallel_path_cannot_do_is_refused_by_name(over, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(**over))


def test_placement_strategy_defaults_to_pack_and_takes_ray_s_strategies():
    assert parse_config(_raw()).tune.placement_strategy == "PACK"
    for strategy in ("PACK", "SPREAD", "STRICT_SPREAD"):
        config = parse_config(_raw(tune__placement_strategy=strategy))
        assert config.tune.placement_strategy == strategy


@pytest.mark.parametrize("value", ["spread", "STRICT_PACK", "", 2])
def test_an_unknown_placement_strategy_is_refused_by_name(value):
    with pytest.raises(ConfigError, match=r"tune\.placement_strategy: .*'PACK', 'SPREAD' or "
                                          r"'STRICT_SPREAD'"):
        parse_config(_raw(tune__placement_strategy=value))


def test_a_placement_strategy_without_data_parallel_workers_is_refused():
    with pytest.raises(ConfigError, match=r"tune\.placement_strategy: 'SPREAD' .* needs "
                                          r"tune\.workers_per_trial > 1"):
        parse_config(_raw(tune__workers_per_trial=1, tune__placement_strategy="SPREAD"))
    # the default is today's behaviour, so it is fine on the one-process path
    assert parse_config(_raw(tune__workers_per_trial=1)).tune.placement_strategy == "PACK"


def test_storage_on_object_storage_is_for_the_data_parallel_job(monkeypatch):
    with pytest.raises(ConfigError, match=r"tune\.storage_path: .* not under an allowed"):
        parse_config(_raw(tune__storage_path="s3://bucket/ray_results"))
    monkeypatch.setenv("RAYLANE_ALLOWED_LOCATIONS", "s3://bucket/ray_results")
    config = parse_config(_raw(tune__storage_path="s3://bucket/ray_results"))
    assert config.tune.storage_path == "s3://bucket/ray_results"
    with pytest.raises(ConfigError, match=r"tune\.storage_path: 's3://bucket/ray_results' is "
                                          r"a URI; .*tune\.workers_per_trial > 1"):
        parse_config(_raw(tune__workers_per_trial=1, tune__storage_path="s3://bucket/ray_results"))
