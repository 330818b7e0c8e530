"""The preprocessing is fitted once per job, on the driver, and the trials of a real Ray Tune
search only fit models on the arrays it produced; the refit model exports and registers as before.

Fits are counted in every process (the test's and each Ray worker's, through Ray's
``worker_process_setup_hook``) by ``support.preprocessing_fits``."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from support import preprocessing_fits
from support.environ import restored_environ
from support.paths import CREDIT_CSV, ROOT

from raylane.config import load_config
from raylane.model.onnx_model import OnnxModel
from raylane.model.store import load_registered_model
from raylane.training.job import load_data, run_pipeline

pytestmark = pytest.mark.slow

THREE_TRIALS = [
    "tune.num_samples=3",
    "tune.max_concurrent_trials=2",
    "tune.search_alg=random",
    "tune.scheduler.type=fifo",  # every trial runs to its end: three full trials
    "model.search_space.n_estimators={type: qrandint, lower: 20, upper: 40, q: 10}",
    "model.report_every=10",
]


@pytest.fixture(scope="module")
def fits_file(tmp_path_factory):
    """A local Ray (2 CPUs) whose workers, and this process, count preprocessing fits."""
    import ray
    from ray import cloudpickle  # Ray's own copy: its by-value registry is not cloudpickle's

    path = tmp_path_factory.mktemp("fits") / "fits.txt"
    original = ColumnTransformer.fit_transform
    # by value: Ray workers cannot import tests/support
    cloudpickle.register_pickle_by_value(preprocessing_fits)
    with restored_environ():
        os.environ.pop("RAY_ADDRESS", None)
        os.environ[preprocessing_fits.ENV] = str(path)
        preprocessing_fits.install()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {preprocessing_fits.ENV: str(path)},
                              "worker_process_setup_hook": preprocessing_fits.install})
        try:
            yield path
        finally:
            ray.shutdown()
            ColumnTransformer.fit_transform = original
            cloudpickle.unregister_pickle_by_value(preprocessing_fits)


def test_a_search_of_three_trials_fits_the_preprocessing_once(fits_file, tmp_path):
    config = load_config(ROOT / "tune_configs" / "credit_xgboost.yaml", [
        *THREE_TRIALS, f"data.path={CREDIT_CSV}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"tune.storage_path={tmp_path / 'ray_results'}",
    ])
    fits_file.unlink(missing_ok=True)

    result = run_pipeline(config)

    assert len(result.search.trials) == 3 and result.search.errored_trials == 0
    assert (result.search.trials["steps"] >= 20).all()  # the trials did fit their models
    # one fit, in this process (the driver): none in the trials, none for the refit
    assert preprocessing_fits.fits(fits_file) == [(os.getpid(), "plain")]

    # the registered graph still takes raw columns and matches the refit pipeline
    assert result.parity.passed and result.version == "1"
    registered = load_registered_model("models:/credit@champion", config.tracking_uri)
    holdout = load_data(config)[1].holdout.X
    onnx = OnnxModel(registered.onnx_bytes, registered.schema).predict_frame(holdout)
    assert set(holdout.columns) == set(registered.schema.feature_names)
    assert np.isfinite(onnx.probabilities).all()
