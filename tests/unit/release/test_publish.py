"""``raylane.release.publish.publish`` and the promotion it drives, against a real MLflow store
(SQLite and local artifacts in a temporary directory, in process)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service import utils as tracking_utils
from support.net import closed_port_url
from support.serving import Trained, load_frame, register_raw, train

from raylane.config import ExportConfig
from raylane.data.read import infer_schema, split_data
from raylane.model.families import get_family
from raylane.model.metrics import METRICS, Metric
from raylane.model.onnx_model import OnnxModel
from raylane.model.store import SCHEMA_METADATA_KEY, load_registered_model
from raylane.release.decision import Decision, record
from raylane.release.export import ParityError
from raylane.release.gates import GateResult
from raylane.release.judging import JudgingSet, decision_from, judge
from raylane.release.publish import publish
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client, parent_run
from raylane.training.fit import fit_model, model_output

PASSED = GateResult(passed=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('publish') / 'mlflow.db'}"
    client = mlflow_client(uri)
    return SimpleNamespace(uri=uri, client=client,
                           experiment_id=open_experiment(client, "publish-tests"))


@pytest.fixture(scope="module")
def models() -> dict[str, Trained]:
    return {"small": train("credit", n_estimators=3, seed=0),
            "big": train("credit", n_estimators=40, seed=0)}


def score(trained: Trained) -> float:
    holdout = trained.data.holdout
    return trained.metric(holdout.y, model_output(trained.pipeline, holdout.X))


def publish_in_run(store, name: str, trained: Trained, gates: GateResult = PASSED, **kw):
    with parent_run(store.client, store.experiment_id, run_name=name) as run_id:
        return publish(trained.pipeline, trained.schema, trained.data.holdout,
                       metric=trained.metric, gates=gates, client=store.client,
                       registered_model=name, run_id=run_id, **kw), run_id


def aliases(client, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def test_a_model_that_fails_parity_is_never_registered(store, models):
    client, experiment_id = store.client, store.experiment_id
    strict = ExportConfig(parity_atol=0, parity_rtol=0, parity_max_mismatch_fraction=0)
    with pytest.raises(ParityError, match="nothing was registered"):
        publish_in_run(store, "strict", models["small"], export=strict)
    with pytest.raises(MlflowException):
        client.get_registered_model("strict")
    assert client.search_model_versions("name='strict'") == []
    [run] = client.search_runs([experiment_id], "attributes.run_name = 'strict'")
    assert run.info.status == "FAILED"
    assert run.data.tags["raylane.parity"] == "failed"
    assert run.data.metrics["parity.mismatched_rows"] > 0
    assert "export/parity.json" in {a.path for a in client.list_artifacts(run.info.run_id,
                                                                           "export")}
    assert not client.search_logged_models([experiment_id],
                                           f"source_run_id = '{run.info.run_id}'")


def test_first_publish_registers_with_tags_and_becomes_champion(store, models):
    uri, client = store.uri, store.client
    env_before, global_before = os.environ.get("MLFLOW_TRACKING_URI"), tracking_utils._tracking_uri
    trained = models["small"]
    published, run_id = publish_in_run(store, "first", trained, tags={"team": "risk"},
                                       metadata={"dataset_digest": "abc"})
    version = str(published.version.version)
    assert version == "1" and published.decision.promoted and published.parity.passed
    assert aliases(client, "first") == {"champion": "1", "challenger": "1"}
    tags = client.get_model_version("first", "1").tags
    assert tags["team"] == "risk" and tags["raylane.decision"] == "promoted"
    assert tags["raylane.decision.reasons"] == "passed the gates; no comparable champion before"
    assert tags["raylane.champion.version"] == "none"
    assert float(tags["raylane.holdout.roc_auc"]) == pytest.approx(score(trained), abs=1e-6)
    assert "raylane.parity.max_abs_diff" in tags
    run = client.get_run(run_id)
    assert run.data.tags["raylane.model_version"] == "1"
    assert run.data.tags["raylane.decision"] == "promoted"
    assert run.data.tags["raylane.parity"] == "passed" and run.info.status == "FINISHED"
    assert [o.model_id for o in run.outputs.model_outputs] == [published.model_id]
    assert str(client.get_logged_model(published.model_id).status) == "READY"

    # what serving reads: model.onnx and the MLmodel metadata, plus signature and input example
    registered = load_registered_model("models:/first@champion", uri)
    assert registered.onnx_bytes == published.onnx_bytes and registered.run_id == run_id
    assert registered.schema == trained.schema
    assert registered.metadata["source_run_id"] == run_id
    assert registered.metadata["dataset_digest"] == "abc"
    proba = OnnxModel(registered.onnx_bytes, registered.schema).predict_frame(trained.X)
    np.testing.assert_allclose(proba.probabilities, trained.pipeline.predict_proba(trained.X),
                               atol=1e-4)
    local = download_artifacts(artifact_uri=client.get_model_version_download_uri("first", "1"),
                               tracking_uri=uri)
    mlmodel = yaml.safe_load(Path(local, "MLmodel").read_text())
    assert SCHEMA_METADATA_KEY in mlmodel["metadata"] and "onnx" in mlmodel["flavors"]
    assert mlmodel["model_id"] == published.model_id and mlmodel["run_id"] == run_id
    assert [c["name"] for c in yaml.safe_load(mlmodel["signature"]["inputs"])] == \
        trained.schema.feature_names
    assert mlmodel["saved_input_example_info"]["artifact_path"]

    # publishing went through the client only: MLflow's process-wide state is untouched
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_before
    assert tracking_utils._tracking_uri == global_before


def test_a_challenger_that_beats_the_champion_is_promoted_and_one_that_loses_is_not(
    store, models
):
    client = store.client
    worse, better = sorted(models.values(), key=score)
    assert score(worse) < score(better)
    publish_in_run(store, "race", worse)
    won, _ = publish_in_run(store, "race", better)
    assert won.decision.promoted and won.decision.champion_version == "1"
    assert won.decision.champion_score == pytest.approx(score(worse), abs=1e-4)
    assert aliases(client, "race") == {"champion": "2", "challenger": "2"}
    lost, _ = publish_in_run(store, "race", worse)
    assert not lost.decision.promoted
    assert "does not beat champion v2" in lost.decision.reasons[0]
    assert aliases(client, "race") == {"champion": "2", "challenger": "3"}
    tags = client.get_model_version("race", "3").tags
    assert tags["raylane.decision"] == "not promoted"
    assert tags["raylane.champion.version"] == "2"
    assert float(tags["raylane.champion.holdout.roc_auc"]) == pytest.approx(score(better),
                                                                             abs=1e-4)


def test_a_tie_keeps_the_champion(store, models):
    client = store.client
    publish_in_run(store, "tie", models["small"])
    again, _ = publish_in_run(store, "tie", models["small"])
    assert not again.decision.promoted and "does not beat champion v1" in again.decision.reasons[0]
    assert aliases(client, "tie") == {"champion": "1", "challenger": "2"}


def test_failed_gates_register_a_challenger_only(store, models):
    client = store.client
    gates = GateResult(passed=False, reasons=["holdout roc_auc 0.7 is below the floor 0.99"])
    published, run_id = publish_in_run(store, "gated", models["big"], gates=gates)
    assert not published.decision.promoted
    assert aliases(client, "gated") == {"challenger": "1"}
    assert client.get_model_version("gated", "1").tags["raylane.decision.reasons"] == \
        "holdout roc_auc 0.7 is below the floor 0.99"
    assert client.get_run(run_id).data.tags["raylane.decision"] == "not promoted"


def test_promote_false_registers_a_challenger_without_a_decision(store, models):
    client = store.client
    publish_in_run(store, "standby", models["small"])
    held, _ = publish_in_run(store, "standby", models["big"], promote=False)
    assert not held.decision.promoted
    assert aliases(client, "standby") == {"champion": "1", "challenger": "2"}


def test_a_champion_that_cannot_be_loaded_is_replaced(store, models):
    uri, client = store.uri, store.client
    trained = models["small"]
    # a graph without the schema's inputs: OnnxModel refuses to load it
    broken = pd.DataFrame({"x": [1.0]})
    import onnx

    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "broken",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    register_raw(uri, "unloadable", model.SerializeToString(), trained.schema, broken)
    published, _ = publish_in_run(store, "unloadable", trained)
    assert published.decision.promoted and published.decision.champion_version == "1"
    assert published.decision.champion_score is None
    assert aliases(client, "unloadable") == {"champion": "2", "challenger": "2"}
    reasons = client.get_model_version("unloadable", "2").tags["raylane.decision.reasons"]
    assert "champion v1 could not be loaded" in reasons and "(replaced)" in reasons


def test_a_champion_for_another_task_blocks_promotion(store, models):
    client = store.client
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": 2 * x[:, 0] + x[:, 1]})
    data = split_data(frame, infer_schema(frame, "y", "regression"), 0.2, 0.2, 0)
    rmse = METRICS["rmse"]
    fit = fit_model(data, get_family("xgboost"), {"n_estimators": 5}, rmse, 0)
    publish_in_run(store, "mixed", Trained(fit.pipeline, data, rmse))
    published, _ = publish_in_run(store, "mixed", models["big"])
    assert not published.decision.promoted
    assert published.decision.reasons == [
        "champion v1 predicts other classes or a task; not comparable on this holdout"]
    assert aliases(client, "mixed") == {"champion": "1", "challenger": "2"}


def test_a_champion_needing_columns_the_holdout_lacks_blocks_promotion(store, models):
    frame, target = load_frame("credit")
    dropped = frame.columns.drop(target)[0]
    narrow = frame.drop(columns=[dropped])
    data = split_data(narrow, infer_schema(narrow, target, None), 0.2, 0.1, 0)
    auc = METRICS["roc_auc"]
    fit = fit_model(data, get_family("xgboost"), {"n_estimators": 5}, auc, 0)
    publish_in_run(store, "columns", models["small"])
    published, _ = publish_in_run(store, "columns", Trained(fit.pipeline, data, auc))
    assert not published.decision.promoted
    assert published.decision.reasons == [
        f"champion v1 needs columns ['{dropped}']; not comparable on this holdout"]


def unreadable(column: int = 5) -> Metric:
    """roc_auc reading a probability column the model does not have, as the K-1 columns of a
    model trained without one class made the real metrics do (a KeyError/IndexError)."""
    return Metric("roc_auc", "classification", "max", lambda y, proba: proba[:, column][0])


def test_a_failure_while_deciding_registers_nothing(store, models):
    trained = models["small"]
    with parent_run(store.client, store.experiment_id, run_name="undecided") as run_id, \
            pytest.raises(IndexError):
        publish(trained.pipeline, trained.schema, trained.data.holdout, metric=unreadable(),
                gates=PASSED, client=store.client, registered_model="undecided", run_id=run_id)
    assert store.client.search_model_versions("name='undecided'") == []


class AliasesRefused(MlflowClient):
    """A registry that takes tags but fails while an alias moves, as a stop or a dropped
    connection can land between the two."""

    def set_registered_model_alias(self, name, alias, version):
        raise KeyboardInterrupt


def test_a_version_whose_aliases_cannot_be_moved_is_tagged_failed(store, models):
    trained = models["small"]
    publish_in_run(store, "late", trained)  # v1, the champion
    version = register_raw(store.uri, "late", trained.onnx_bytes, trained.schema, trained.X,
                           alias=None)
    mv = store.client.get_model_version("late", version)
    won = Decision(promoted=True, score=0.9, champion_version="1", champion_score=0.8)
    with pytest.raises(KeyboardInterrupt):
        record(AliasesRefused(store.uri), mv, won, trained.metric)
    tags = store.client.get_model_version("late", version).tags
    assert tags["raylane.decision"] == "failed"
    assert "moving the aliases failed (KeyboardInterrupt" in tags["raylane.decision.reasons"]
    assert "passed the gates and beat the champion" in tags["raylane.decision.reasons"]
    assert aliases(store.client, "late") == {"champion": "1", "challenger": "1"}


def test_an_unreachable_champion_blocks_promotion(store, models, monkeypatch):
    """The champion's artifacts live in a store that refuses connections (a real, closed
    port): nothing is known about it, so the challenger stays challenger and says why."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    offline = closed_port_url()
    monkeypatch.setenv("RAYLANE_ARTIFACT_ROOTS", offline)  # a store the operator trusts
    client, trained = store.client, models["big"]
    client.create_registered_model("offline")
    champion = client.create_model_version(
        "offline", source=f"{offline}/api/2.0/mlflow-artifacts/artifacts/1/model")
    client.set_registered_model_alias("offline", "champion", champion.version)
    published, run_id = publish_in_run(store, "offline", trained)
    decision = published.decision
    assert not decision.promoted and decision.champion_unavailable
    assert decision.champion_version == "1" and decision.champion_score is None
    assert aliases(client, "offline") == {"champion": "1", "challenger": "2"}
    tags = client.get_model_version("offline", "2").tags
    assert tags["raylane.decision"] == "not promoted"
    assert "champion v1 could not be fetched" in tags["raylane.decision.reasons"]
    assert "promote this version by hand" in tags["raylane.decision.reasons"]
    assert tags["raylane.decision.retry"].startswith("champion unavailable")
    assert client.get_run(run_id).data.tags["raylane.decision"] == "not promoted"


def test_an_unreachable_registry_is_no_champion_to_replace(store, models, monkeypatch):
    """Asking which version is champion fails with a refused connection: that is not 'no
    champion yet' (the old code promoted then)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    trained = models["big"]
    offline = MlflowClient(tracking_uri=store.uri, registry_uri=closed_port_url())
    challenger = OnnxModel(trained.onnx_bytes, trained.schema)
    verdict = judge(offline, "anything", challenger, JudgingSet(rows=trained.data.holdout),
                    trained.metric)
    decision = decision_from(verdict, PASSED)
    assert not decision.promoted and decision.champion_unavailable
    assert "could not say which version of anything is champion" in decision.reasons[0]
