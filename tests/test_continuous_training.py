"""Continuous training end to end on a real local Ray and a real MLflow store: a challenger is
judged on rows neither model trained on, through both ONNX graphs, and promoted only if it wins;
the CT run, the training run and the model version link to each other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from conftest import CREDIT_CSV, ROOT
from process_state import restored_environ

from raylane.config import load_config
from raylane.continuous import run_continuous_training
from raylane.data.read import infer_schema, split_data
from raylane.model.families import get_family
from raylane.model.metrics import METRICS
from raylane.model.onnx_model import OnnxModel
from raylane.model.store import load_version
from raylane.release.judging import score_graph
from raylane.tracking.runs import mlflow_client
from raylane.training.fit import fit_model, model_output
from raylane.training.job import run_pipeline

pytestmark = pytest.mark.slow

# One fixed configuration per model (no search): the refit is exactly these parameters.
GOOD = "{tree_method: hist, n_jobs: 1, n_estimators: 100, max_depth: 3, learning_rate: 0.1}"
# Deep, unregularized, fast: it memorizes its training rows, duplicates included.
MEMORIZER = ("{tree_method: hist, n_jobs: 1, n_estimators: 300, max_depth: 10, "
             "learning_rate: 1.0, min_child_weight: 0.0, reg_lambda: 0.0}")
WEAK = "{tree_method: hist, n_jobs: 1, n_estimators: 2, max_depth: 1, learning_rate: 0.05}"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    with restored_environ():  # ray.init exports RAY_USAGE_STATS_ENABLED=0; later clusters inherit
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture()
def split_credit(tmp_path):
    """The credit table as reference data (first 3,000 rows, the champion's) and new rows (the
    rest), each new row labelled three times over (the same row logged and labelled again)."""
    frame = pd.read_csv(CREDIT_CSV)
    reference, new = frame.iloc[:3000], frame.iloc[3000:]
    ref_path, new_path = tmp_path / "reference.csv", tmp_path / "new.parquet"
    reference.to_csv(ref_path, index=False)
    pd.concat([new] * 3, ignore_index=True).to_parquet(new_path)
    return ref_path, new_path


def config(tmp_path, sqlite_uri, data, params: str, *extra: str):
    return load_config(ROOT / "tune_configs" / "credit_xgboost.yaml", [
        f"data.path={data}", f"mlflow.tracking_uri={sqlite_uri}",
        f"tune.storage_path={tmp_path / 'ray_results'}", "tune.num_samples=1",
        "tune.search_alg=random", "tune.scheduler.type=fifo", "model.search_space={}",
        f"model.params={params}", "gates.min_holdout={}", "gates.must_beat_baseline=false",
        *extra])


def test_a_worse_challenger_is_not_promoted_though_the_unfair_comparison_would(
        tmp_path, sqlite_uri, split_credit):
    ref_path, new_path = split_credit
    champion = run_pipeline(config(tmp_path, sqlite_uri, ref_path, GOOD))
    assert champion.decision.promoted and champion.version == "1"
    ct_config = config(tmp_path, sqlite_uri, ref_path, MEMORIZER)

    # The old comparison: a random holdout of reference + new rows, the challenger scored
    # natively on it, the champion's graph on the same rows (most of them rows a model trained
    # on: the new rows' copies, and reference rows in the champion's training set).
    client = mlflow_client(sqlite_uri)
    frame = pd.concat([pd.read_csv(ref_path), pd.read_parquet(new_path)], ignore_index=True)
    old = split_data(frame, infer_schema(frame, "Status", "classification"), 0.2, 0.2, 7)
    auc = METRICS["roc_auc"]
    params = dict(ct_config.model.params)
    unfair_challenger = fit_model(old, get_family("xgboost"), params, auc, ct_config.seed)
    registered = load_version(client, "models:/credit@champion")
    champion_graph = OnnxModel(registered.onnx_bytes, registered.schema)
    unfair = {"challenger": auc(old.holdout.y, model_output(unfair_challenger.pipeline,
                                                            old.holdout.X)),
              "champion": score_graph(champion_graph, old.holdout, auc)}
    assert unfair["challenger"] > unfair["champion"] + 0.03, unfair  # it would have been promoted

    result = run_continuous_training(ct_config, force=True, new_data=str(new_path))
    assert result.retrained and result.model_version == "2"
    assert not result.promoted, result
    fair = {k: float(result.scores[f"raylane.judging.{k}"]) for k in ("challenger", "champion")}
    assert fair["challenger"] < fair["champion"], fair
    assert any("does not beat champion v1" in r for r in result.reasons), result.reasons
    assert str(client.get_model_version_by_alias("credit", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("credit", "challenger").version) == "2"
    # judged on new rows only: the holdout rows among the 1,454 new rows, all three copies
    tags = client.get_model_version("credit", "2").tags
    rows = int(tags["raylane.judging.rows"])
    assert 0.15 * 3 * 1454 < rows < 0.25 * 3 * 1454 and rows % 3 == 0
    assert tags["raylane.holdout.hash_seed"] == "0"
    assert tags["raylane.holdout.key"].split(",") == sorted(frame.columns)
    # the recorded champion score is its graph's score on exactly those rows
    assert fair["champion"] == pytest.approx(float(tags["raylane.judging.champion"]))


def test_a_better_challenger_is_promoted_and_every_step_links_up(
        tmp_path, sqlite_uri, split_credit):
    ref_path, new_path = split_credit
    weak = run_pipeline(config(tmp_path, sqlite_uri, ref_path, WEAK))
    assert weak.decision.promoted
    result = run_continuous_training(config(tmp_path, sqlite_uri, ref_path, GOOD), force=True,
                                     new_data=str(new_path))
    assert result.promoted, result.reasons
    fair = {k: float(result.scores[f"raylane.judging.{k}"]) for k in ("challenger", "champion")}
    assert fair["challenger"] > fair["champion"], fair

    client = mlflow_client(sqlite_uri)
    version = client.get_model_version_by_alias("credit", "champion")
    assert str(version.version) == result.model_version == "2"
    ct_run = client.get_run(result.run_id)
    training_run = client.get_run(result.training_run_id)
    assert client.get_experiment(ct_run.info.experiment_id).name == "credit-ct"
    # version -> CT run -> training run -> version, and the trigger
    assert version.tags["raylane.ct.run_id"] == result.run_id
    assert version.run_id == result.training_run_id
    assert ct_run.data.tags["raylane.training_run_id"] == result.training_run_id
    assert ct_run.data.tags["raylane.model_version"] == "2"
    assert ct_run.data.tags["raylane.ct.trigger"] == "forced"
    assert ct_run.data.tags["raylane.ct.decision"] == "promoted"
    assert training_run.data.tags["raylane.ct.run_id"] == result.run_id
    assert ct_run.data.metrics["new_rows"] == 3 * 1454
    path = client.download_artifacts(result.run_id, "judging/holdout_definition.json",
                                     str(tmp_path))
    definition = json.loads(Path(path).read_text())
    assert definition["new_rows"] == 3 * 1454
    assert definition["judging_rows"] == int(version.tags["raylane.judging.rows"])


def test_drifted_traffic_triggers_retraining_linked_to_the_monitoring_run(
        tmp_path, sqlite_uri, split_credit):
    """Predictions logged by the serving code on drifted inputs -> the monitor says retrain ->
    CT retrains; the monitoring run and the CT run name each other."""
    from raylane.serving.prediction_log import PredictionLog

    ref_path, new_path = split_credit
    run_pipeline(config(tmp_path, sqlite_uri, ref_path, WEAK))
    client = mlflow_client(sqlite_uri)
    registered = load_version(client, "models:/credit@champion")
    graph = OnnxModel(registered.onnx_bytes, registered.schema)
    traffic = pd.read_parquet(new_path).drop(columns="Status")
    traffic["Amount"] = traffic["Amount"] * 3  # a numeric column scaled
    traffic["Home"] = np.where(np.arange(len(traffic)) % 2 == 0, "rent", traffic["Home"])
    logdir = tmp_path / "prediction_log"
    plog = PredictionLog(str(logdir), sample_rate=1.0)
    feeds = graph.feeds_from_frame(traffic)
    plog.record(registered.name, registered.version, registered.schema, feeds, len(traffic),
                graph.run(feeds))
    plog.flush()

    # two of the 13 columns drift: retrain when at least 10% do
    result = run_continuous_training(
        config(tmp_path, sqlite_uri, ref_path, GOOD, "monitoring.drift.drift_share=0.1"),
        predictions=str(logdir), new_data=str(new_path))
    assert result.trigger == "monitor" and result.report["decision"] == "retrain"
    assert result.retrained and result.monitoring_run_id
    ct_run = client.get_run(result.run_id)
    assert ct_run.data.tags["raylane.monitoring.run_id"] == result.monitoring_run_id
    assert client.get_run(result.monitoring_run_id).data.tags["raylane.ct.run_id"] == \
        result.run_id
    version = client.get_model_version("credit", result.model_version)
    assert version.tags["raylane.monitoring.run_id"] == result.monitoring_run_id
    assert "monitoring/report.json" in [a.path for a in client.list_artifacts(
        result.run_id, "monitoring")]
