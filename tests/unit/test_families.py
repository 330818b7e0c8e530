"""Model families on a tiny generated table: registry, aliases, growth in steps as ASHA counts it,
and ONNX conversion with parity. No Ray."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
from threadpoolctl import threadpool_limits

from raylane.config import parse_config
from raylane.data.read import PreparedData, infer_schema, split_data
from raylane.model import families
from raylane.model.families import (
    FAMILIES,
    FAMILY_ALIASES,
    Family,
    WarmStartFamily,
    family_of,
    get_family,
    register,
)
from raylane.model.metrics import METRICS
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import Task
from raylane.release.export import check_parity, to_onnx
from raylane.training.fit import fit_model
from raylane.training.tuning import max_reports

BUILT_IN = {"xgboost", "random_forest", "hist_gradient_boosting", "linear"}
# Small enough to be fast, with a final step that is not a multiple of REPORT_EVERY.
STEPS = 12
REPORT_EVERY = 5
SMALL: dict[str, dict[str, Any]] = {
    "xgboost": {"max_depth": 3},
    "random_forest": {"max_depth": 4},
    "hist_gradient_boosting": {"max_depth": 3},
    "linear": {},
    "extra_trees": {"max_depth": 4},
}


def tiny_data(task: Task, rows: int = 300, seed: int = 0) -> PreparedData:
    """Two numbers (one with gaps) and a category; the target depends on all three."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    x2 = rng.uniform(0, 10, size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    signal = 1.5 * x1 + 0.3 * x2 + (colour == "red") + rng.normal(scale=0.5, size=rows)
    frame = pd.DataFrame({"x1": x1, "x2": np.where(rng.random(rows) < 0.1, np.nan, x2),
                          "colour": colour})
    frame["y"] = np.where(signal > np.median(signal), "yes", "no") \
        if task == "classification" else 10.0 * signal
    schema = infer_schema(frame, "y", task)
    return split_data(frame, schema, 0.2, 0.2, seed=seed, source=f"tiny-{task}")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One OpenMP thread, as a trial gets with one CPU (HistGradientBoosting is slow to spin up
    threads on a busy machine)."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def datasets() -> dict[str, PreparedData]:
    return {task: tiny_data(task) for task in ("classification", "regression")}


def metric_for(task: Task):
    return METRICS["roc_auc" if task == "classification" else "rmse"]


def config_for(family: str, task: Task, **model: Any):
    """A validated pipeline config for ``family`` (data path unused here)."""
    return parse_config({
        "data": {"path": "unused.csv", "target": "y", "task": task},
        "model": {"family": family, "report_every": REPORT_EVERY, **model},
        "mlflow": {"registered_model": "m"},
    })


class ExtraTrees(WarmStartFamily):
    """A family added the way a new one is: one class, one ``register`` call."""

    name = "extra_trees"
    aliases = ("extra",)
    estimators = {"classification": ExtraTreesClassifier, "regression": ExtraTreesRegressor}
    steps_param = "n_estimators"

    def defaults(self, task: Task) -> dict[str, Any]:
        return {"n_estimators": 50, "n_jobs": 1}


@pytest.fixture()
def extra_trees():
    family = register(ExtraTrees())
    yield family
    families.unregister(family.name)


def test_every_built_in_family_is_registered_with_an_estimator_per_task():
    assert set(FAMILIES) >= BUILT_IN
    for name in BUILT_IN:
        family = get_family(name)
        assert family.name == name
        assert set(family.estimators) == {"classification", "regression"}
        for task, cls in family.estimators.items():
            assert family_of(cls()) is family
            assert isinstance(family.build_estimator(task, {}, seed=3), cls)


def test_aliases_resolve_to_their_family():
    assert FAMILY_ALIASES == {"logistic_regression": "linear", "ridge": "linear"}
    assert get_family("logistic_regression") is get_family("ridge") is get_family("linear")
    with pytest.raises(KeyError):
        get_family("svm")
    with pytest.raises(KeyError, match="no registered family"):
        family_of(ExtraTreesClassifier())


def test_defaults_seed_and_params_on_top():
    xgb = get_family("xgboost")
    model = xgb.build_estimator("classification", {"max_depth": 3}, seed=11)
    params = model.get_params()
    assert (params["n_estimators"], params["n_jobs"], params["tree_method"]) == (200, 1, "hist")
    assert (params["max_depth"], params["random_state"]) == (3, 11)
    assert params["eval_metric"] == "logloss"
    assert xgb.build_estimator("regression", {}, 0).get_params()["eval_metric"] is None
    assert xgb.build_estimator("classification", {"eval_metric": "auc"}, 0).eval_metric == "auc"
    assert get_family("linear").build_estimator("classification", {}, 0).max_iter == 2000
    assert get_family("random_forest").build_estimator("regression", {}, 5).random_state == 5
    assert "max_iter" in get_family("hist_gradient_boosting").hyperparameters("regression")
    assert "alpha" in get_family("ridge").hyperparameters("regression")


def test_registry_refuses_taken_names_and_missing_tasks():
    class Half(Family):
        name = "half"
        estimators = {"classification": ExtraTreesClassifier}

        def defaults(self, task):
            return {}

    class Clash(Half):
        name = "clash"
        aliases = ("ridge",)
        estimators = {"classification": ExtraTreesClassifier, "regression": ExtraTreesRegressor}

    class Nameless(Half):
        name = ""

    with pytest.raises(ValueError, match="needs a name and estimators"):
        register(Nameless())
    with pytest.raises(ValueError, match="no estimator for"):
        register(Half())
    with pytest.raises(ValueError, match="already registered"):
        register(Clash())
    assert "half" not in FAMILIES and "clash" not in FAMILIES

    class NoDefaults(Family):
        name = "no_defaults"
        estimators = {"classification": ExtraTreesClassifier, "regression": ExtraTreesRegressor}

    with pytest.raises(TypeError, match="defaults"):
        NoDefaults()


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_each_family_grows_in_steps_as_asha_counts_them(datasets, name, task):
    """Reports while growing are what ``max_reports`` (ASHA's max_t) expects for the longest
    trial; the final score is the model's own."""
    family = get_family(name)
    data = datasets[task]
    params = dict(SMALL[name])
    space = {}
    if family.steps_param:
        params[family.steps_param] = STEPS
        space = {family.steps_param: {"type": "qrandint", "lower": 4, "upper": STEPS, "q": 4}}
    reports: list[dict] = []
    fit = fit_model(data, family, params, metric_for(task), seed=0, report=reports.append,
                    report_every=REPORT_EVERY)
    expected = max_reports(config_for(name, task, search_space=space), family, task)
    assert len(reports) == expected
    assert reports == fit.history
    key = f"valid_{metric_for(task).name}"
    if family.steps_param:
        assert expected == 3
        assert [r["steps"] for r in reports] == [5, 10, 12]
        assert fit.steps == STEPS
        assert fit.pipeline.named_steps["model"].get_params()[family.steps_param] == STEPS
    else:
        assert expected == 1 and reports[0]["steps"] == 1 and fit.steps is None
    assert fit.valid_score == reports[-1][key]
    refit = fit_model(data, family, params, metric_for(task), seed=0)  # in one go, no reports
    assert len(refit.history) == 1
    assert refit.valid_score == pytest.approx(fit.valid_score, rel=1e-6)
    assert all(r["fit_seconds"] >= 0 for r in reports)


def assert_converts_with_parity(data: PreparedData, fit) -> None:
    model = OnnxModel(to_onnx(fit.pipeline, data.schema), data.schema)
    inputs = {i.name: i.type for i in model.session.get_inputs()}
    assert inputs == {"x1": "tensor(float)", "x2": "tensor(float)", "colour": "tensor(string)"}
    report = check_parity(fit.pipeline, model, data.holdout.X)
    assert report.passed and report.mismatched_rows == 0, report
    if data.schema.task == "classification":
        assert report.label_agreement == 1.0


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_each_family_converts_to_onnx_with_parity(datasets, name, task):
    family = get_family(name)
    params = dict(SMALL[name])
    if family.steps_param:
        params[family.steps_param] = STEPS
    fit = fit_model(datasets[task], family, params, metric_for(task), seed=0,
                    report=lambda _: None, report_every=REPORT_EVERY)
    assert_converts_with_parity(datasets[task], fit)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_family_added_in_one_class_trains_in_steps_and_converts(datasets, extra_trees, task):
    config = config_for("extra", task, params={"max_depth": 4},
                        search_space={"n_estimators": {"type": "choice", "values": [6, STEPS]}})
    family = get_family(config.model.family)
    assert family is extra_trees
    reports: list[dict] = []
    fit = fit_model(datasets[task], family, {"n_estimators": STEPS, "max_depth": 4},
                    metric_for(task), seed=0, report=reports.append, report_every=REPORT_EVERY)
    assert [r["steps"] for r in reports] == [5, 10, 12]
    assert max_reports(config, family, task) == len(reports)
    assert isinstance(fit.pipeline.named_steps["model"], extra_trees.estimators[task])
    assert_converts_with_parity(datasets[task], fit)


def test_an_unregistered_family_is_gone(extra_trees):
    families.unregister("extra_trees")
    with pytest.raises(KeyError):
        get_family("extra")
    with pytest.raises(ValueError, match="unknown family 'extra_trees'"):
        config_for("extra_trees", "regression")
    register(extra_trees)  # for the fixture's teardown


def test_trial_imports_stay_light():
    """Trial workers import raylane.training.fit: no MLflow, Optuna, Tune or ONNX converters."""
    heavy = ["mlflow", "optuna", "ray.tune", "skl2onnx", "onnxmltools", "onnxruntime"]
    code = ("import sys, raylane.training.fit, raylane.model.families; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
