"""The training job end to end on a real local Ray and real MLflow stores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import ray
from conftest import CREDIT_CSV, DIAMONDS_CSV, ROOT
from process_state import restored_environ

from raylane.config import load_config
from raylane.model.onnx_model import OnnxModel
from raylane.model.store import load_registered_model
from raylane.release.export import ParityError
from raylane.tracking.runs import mlflow_client
from raylane.training.job import load_data, run_pipeline
from raylane.training.summary import render

pytestmark = pytest.mark.slow

FAST_XGB = [
    "tune.num_samples=3",
    "tune.max_concurrent_trials=2",
    "tune.search_alg=random",
    "model.search_space.n_estimators={type: qrandint, lower: 20, upper: 60, q: 10}",
    "model.report_every=10",
]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    with restored_environ():  # ray.init exports RAY_USAGE_STATS_ENABLED=0; later clusters inherit
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


def config_for(name: str, tmp_path, tracking_uri: str, *extra: str):
    return load_config(
        ROOT / "tune_configs" / name,
        [*FAST_XGB, f"mlflow.tracking_uri={tracking_uri}",
         f"tune.storage_path={tmp_path / 'ray_results'}", *extra],
    )


def test_credit_classification_end_to_end(tmp_path, sqlite_uri):
    config = config_for("credit_xgboost.yaml", tmp_path, sqlite_uri,
                        f"data.path={CREDIT_CSV}")
    result = run_pipeline(config)

    assert result.decision.promoted and result.version == "1"
    assert result.parity.passed and result.parity.rows == len(load_data(config)[1].holdout.y)
    assert result.evaluation.holdout["roc_auc"] > result.evaluation.baseline["roc_auc"] + 0.15
    client = mlflow_client(sqlite_uri)
    assert str(client.get_model_version_by_alias("credit", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("credit", "challenger").version) == "1"

    parent = client.get_run(result.run_id)
    assert parent.data.tags["raylane.parity"] == "passed"
    assert parent.data.tags["raylane.dataset.digest"]
    # f1 and the like count the minority class ("bad"), stated on the run and in the summary
    assert result.pos_label == "bad" and parent.data.params["data.pos_label"] == "bad"
    assert parent.data.tags["raylane.pos_label"] == "bad"
    assert "positive class" in render(result) and "'bad'" in render(result)
    assert parent.inputs.dataset_inputs[0].dataset.digest
    assert {"holdout_roc_auc", "baseline_roc_auc", "best_valid_roc_auc"} <= set(parent.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {"plots/search_progress.png", "plots/tuning_curves.png", "plots/confusion_matrix.png",
            "plots/roc.png", "plots/feature_importance.png"} <= artifacts
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    assert len(children) == 3
    # every trial's run is complete by the time the job ends (it is logged off Tune's loop)
    assert {c.info.status for c in children} == {"FINISHED"}
    assert all(set(config.model.search_space) <= set(c.data.params) for c in children)
    assert all(c.data.tags["raylane.role"] == "trial" for c in children)
    history = client.get_metric_history(children[0].info.run_id, "valid_roc_auc")
    assert len(history) >= 2  # reported every 10 boosting rounds

    # the registered artifact is a self-contained ONNX graph that agrees with the holdout numbers
    registered = load_registered_model("models:/credit@champion", sqlite_uri)
    assert registered.schema.class_labels == ["bad", "good"]
    assert registered.metadata["source_run_id"] == result.run_id
    data = load_data(config)[1]
    proba = OnnxModel(registered.onnx_bytes, registered.schema).predict_frame(
        data.holdout.X).probabilities
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(data.holdout.y, proba[:, 1]) == pytest.approx(
        result.evaluation.holdout["roc_auc"], abs=1e-4)

    # a model that fails its gates is registered as challenger but never promoted
    strict = config_for("credit_xgboost.yaml", tmp_path, sqlite_uri, f"data.path={CREDIT_CSV}",
                        "gates.min_holdout={roc_auc: 0.999}", "tune.num_samples=2")
    second = run_pipeline(strict)
    assert not second.decision.promoted
    assert any("below the floor 0.999" in r for r in second.decision.reasons)
    assert str(client.get_model_version_by_alias("credit", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("credit", "challenger").version) == "2"
    tags = client.get_model_version("credit", "2").tags
    assert tags["raylane.decision"] == "not promoted"
    assert tags["raylane.champion.version"] == "1"
    assert float(tags["raylane.champion.holdout.roc_auc"]) == pytest.approx(
        result.evaluation.holdout["roc_auc"], abs=1e-4)


def test_diamonds_regression_against_mlflow_server(tmp_path, mlflow_server):
    config = config_for("diamonds_xgboost.yaml", tmp_path, mlflow_server,
                        f"data.path={DIAMONDS_CSV}", "data.sample_rows=4000",
                        "gates.max_holdout={rmse: 5000}", "gates.min_holdout={r2: 0.5}")
    result = run_pipeline(config)
    assert result.evaluation.holdout["r2"] > 0.9
    assert result.decision.promoted
    client = mlflow_client(mlflow_server)
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert "plots/residuals.png" in artifacts
    # artifacts go through the server's proxy, so any node can fetch them over HTTP
    registered = load_registered_model(f"models:/diamonds/{result.version}", mlflow_server)
    values = OnnxModel(registered.onnx_bytes, registered.schema).predict_frame(
        load_data(config)[1].holdout.X.head(50)).values
    assert values.shape == (50,) and np.all(np.isfinite(values))


def test_failed_parity_registers_nothing(tmp_path, sqlite_uri):
    config = config_for("diamonds_xgboost.yaml", tmp_path, sqlite_uri,
                        f"data.path={DIAMONDS_CSV}", "data.sample_rows=3000",
                        "export.parity_atol=0", "export.parity_rtol=0",
                        "export.parity_max_mismatch_fraction=0", "mlflow.registered_model=strict")
    env_before = os.environ.get("MLFLOW_TRACKING_URI")
    with pytest.raises(ParityError, match="nothing was registered"):
        run_pipeline(config)
    client = mlflow_client(sqlite_uri)
    assert client.search_model_versions("name='strict'") == []
    experiment = client.get_experiment_by_name("diamonds")
    runs = client.search_runs([experiment.experiment_id], "tags.raylane.parity = 'failed'")
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    # the job left MLflow's process-wide state alone (Ray's callback sets a tracking URI)
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
