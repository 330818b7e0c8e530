"""The reference profile stored at registration (real MLflow store, in process) and live
performance from labels joined on prediction ids."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from support.serving import train

from raylane.data.read import Split
from raylane.model.onnx_model import OnnxModel
from raylane.monitoring.performance import live_performance, read_labels
from raylane.monitoring.reference import (
    REFERENCE_TAG,
    ProfileNotFoundError,
    load_profile,
    reference_sample,
)
from raylane.release.gates import GateResult
from raylane.release.publish import publish
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client, parent_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('reference') / 'mlflow.db'}"
    client = mlflow_client(uri)
    return SimpleNamespace(uri=uri, client=client,
                           experiment_id=open_experiment(client, "reference-tests"))


@pytest.fixture(scope="module")
def trained():
    return train("credit", n_estimators=10, seed=0)


def _publish(store, trained, name, reference):
    with parent_run(store.client, store.experiment_id, run_name=name) as run_id:
        return publish(trained.pipeline, trained.schema, trained.data.holdout,
                       metric=trained.metric, gates=GateResult(passed=True),
                       client=store.client, registered_model=name, run_id=run_id,
                       reference=reference)


def test_reference_sample_is_bounded_stratified_and_seeded():
    rows = np.arange(10_000)
    split = Split(pd.DataFrame({"i": rows}), (rows % 10 == 0).astype(np.int64))  # 10% class 1
    a = reference_sample(split, 1000, seed=3)
    assert len(a) == 1000 and a["i"].is_unique
    assert int(np.sum(a["i"].to_numpy() % 10 == 0)) == 100  # each class keeps its share
    assert a.equals(reference_sample(split, 1000, seed=3))
    assert not a.equals(reference_sample(split, 1000, seed=4))
    assert len(reference_sample(split, 10**6, seed=0)) == 10_000
    regression = Split(split.X, rows * 0.5)
    assert len(reference_sample(regression, 700, seed=0)) == 700


def test_profile_stored_with_the_version(store, trained):
    sample = reference_sample(trained.data.train, 1000, seed=0)
    published = _publish(store, trained, "with-profile", sample)
    version = store.client.get_model_version("with-profile", published.version.version)
    assert version.tags[REFERENCE_TAG] == f"runs:/{version.run_id}/monitoring/reference"
    profile = load_profile(store.client, version)
    assert profile.sample.num_rows == 1000
    assert profile.sample.column_names == trained.schema.feature_names
    assert profile.predictions.num_rows == 1000
    onnx = OnnxModel(published.onnx_bytes, trained.schema)
    expected = onnx.predict_frame(sample)
    labels = np.asarray(trained.schema.class_labels)[expected.labels]
    assert profile.predictions.column("prediction").to_pylist() == labels.tolist()
    hold = trained.data.holdout
    auc = trained.metric(hold.y, onnx.predict_frame(hold.X).probabilities)
    assert profile.holdout_metrics["roc_auc"] == pytest.approx(auc)
    cols = profile.summary["columns"]
    assert cols["Home"]["kind"] == "categorical" and "owner" in cols["Home"]["frequencies"]
    assert cols["Age"]["quantiles"]["0.5"] == pytest.approx(float(sample["Age"].median()))


def test_no_reference_no_profile(store, trained):
    published = _publish(store, trained, "without-profile", None)
    version = store.client.get_model_version("without-profile", published.version.version)
    assert REFERENCE_TAG not in version.tags
    with pytest.raises(ProfileNotFoundError, match="no reference profile"):
        load_profile(store.client, version)


def test_live_performance_from_joined_labels(trained, tmp_path):
    hold = trained.data.holdout
    onnx = OnnxModel(trained.onnx_bytes, trained.schema)
    probs = onnx.predict_frame(hold.X).probabilities.astype(np.float32)
    ids = [f"id-{i}" for i in range(len(hold.y))]
    window = pa.table({
        "prediction_id": ids,
        "probabilities": pa.FixedSizeListArray.from_arrays(pa.array(probs.reshape(-1)), 2),
    })
    labels = np.asarray(trained.schema.class_labels)[hold.y]
    path = tmp_path / "labels.csv"
    # shuffled, then an id never served and a later label for ids[0] the model does not know
    shuffled = pd.DataFrame({"prediction_id": ids, "label": labels}).sample(frac=1,
                                                                            random_state=0)
    extra = pd.DataFrame({"prediction_id": ["nope", ids[0]], "label": ["good", "maybe"]})
    pd.concat([shuffled, extra]).to_csv(path, index=False)
    table = read_labels(str(path))
    holdout = {"roc_auc": trained.metric(hold.y, probs)}
    perf = live_performance(window, table, trained.schema, holdout, metric=None,
                            tolerance=0.05, min_rows=10)
    # ids[0] appears twice: the last label wins, and "maybe" is not a class
    assert perf["labelled_rows"] == len(ids) - 1 and perf["unknown_labels"] == 1
    assert perf["live"]["roc_auc"] == pytest.approx(holdout["roc_auc"], abs=0.01)
    assert not perf["degraded"]
    flipped = table.assign(label=table["label"].map({"good": "bad", "bad": "good"}))
    perf = live_performance(window, flipped, trained.schema, holdout, metric="roc_auc",
                            tolerance=0.05, min_rows=10)
    assert perf["degraded"] and perf["drop"] > 0.3
    no_ids = live_performance(window.drop_columns(["prediction_id"]), table, trained.schema,
                              holdout, metric=None, tolerance=0.05, min_rows=10)
    assert no_ids["labelled_rows"] == 0 and "no prediction_id" in no_ids["note"]
