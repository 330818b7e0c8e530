"""The job's MLflow bookkeeping through an explicit client (raylane/tracking/runs.py)."""

from __future__ import annotations

import os
from contextlib import nullcontext

import matplotlib.pyplot as plt
import mlflow
import pandas as pd
import pytest

from raylane.tracking.runs import (
    RunLog,
    ensure_experiment,
    mlflow_client,
    mlflow_globals_restored,
    parent_run,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('tracking') / 'mlflow.db'}"
    client = mlflow_client(uri)
    return client, ensure_experiment(client, "tracking")


@pytest.mark.parametrize(("raised", "status"), [
    (None, "FINISHED"), (ValueError, "FAILED"), (KeyboardInterrupt, "KILLED"),
])
def test_parent_run_ends_with_the_status_of_how_the_block_ended(store, raised, status):
    client, experiment_id = store
    expected = pytest.raises(raised) if raised else nullcontext()
    with expected, parent_run(client, experiment_id, run_name="job") as run_id:
        assert client.get_run(run_id).info.status == "RUNNING"
        if raised:
            raise raised()
    assert client.get_run(run_id).info.status == status
    assert mlflow.active_run() is None  # no fluent run was started


def test_a_reopened_run_runs_again_then_finishes(store):
    client, experiment_id = store
    with pytest.raises(ValueError), parent_run(client, experiment_id) as run_id:
        raise ValueError
    with parent_run(client, experiment_id, run_id=run_id) as again:
        assert again == run_id and client.get_run(run_id).info.status == "RUNNING"
    assert client.get_run(run_id).info.status == "FINISHED"


def test_run_log_writes_by_run_id(store, tmp_path):
    client, experiment_id = store
    with parent_run(client, experiment_id) as run_id:
        run = RunLog(client, run_id)
        run.params({"a": 1})
        run.metrics({"m": 0.5})
        run.tags({"t": "x"})
        run.json({"k": [1]}, "out/k.json")
        run.frame(pd.DataFrame({"c": [1, 2]}), "tables/c.csv")
        fig = plt.figure()
        run.figure(fig, "empty")
        table = pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]})
        run.dataset(table, str(tmp_path / "t.csv"), "y", context="training")
    got = client.get_run(run_id)
    assert got.data.params == {"a": "1"} and got.data.metrics == {"m": 0.5}
    assert got.data.tags["t"] == "x"
    paths = {a.path for d in ("out", "tables", "plots") for a in client.list_artifacts(run_id, d)}
    assert paths == {"out/k.json", "tables/c.csv", "plots/empty.png"}
    assert not plt.fignum_exists(fig.number)  # logged figures are closed
    [dataset_input] = got.inputs.dataset_inputs
    assert dataset_input.dataset.name == "t.csv" and dataset_input.dataset.digest
    assert {t.key: t.value for t in dataset_input.tags} == {"mlflow.data.context": "training"}


def test_mlflow_globals_restored_undoes_a_global_tracking_uri(tmp_path):
    before_env = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri()
    with mlflow_globals_restored():
        mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
        mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")
        assert "elsewhere" in os.environ["MLFLOW_TRACKING_URI"]
    assert os.environ.get("MLFLOW_TRACKING_URI") == before_env
    assert mlflow.get_tracking_uri() == before
    assert "elsewhere" not in mlflow.get_registry_uri()

