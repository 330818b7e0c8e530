"""Per-trial logging (raylane/tracking/trials.py) through an MLflow outage: a real `mlflow server`
process is stopped during the search and started again on the same port and store."""

from __future__ import annotations

import logging
import time

import pytest
from ray.tune.experiment import Trial
from support.mlflow_server import mlflow_server

from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import (
    mlflow_client,
    mlflow_globals_restored,
    parent_run,
)
from raylane.tracking.trials import BatchedMLflowLoggerCallback

pytestmark = pytest.mark.slow


@pytest.fixture()
def server(tmp_path, monkeypatch):
    # fail fast while the server is down (MLflow's own retries would wait minutes per call)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    with mlflow_server(tmp_path) as srv:
        yield srv


def setup_callback(url: str, name: str, flush_timeout_s: float):
    client = mlflow_client(url)
    experiment_id = open_experiment(client, name)
    with parent_run(client, experiment_id, run_name="job") as parent_id:
        pass
    cb = BatchedMLflowLoggerCallback(
        tracking_uri=url, experiment_name=name,
        tags={"mlflow.parentRunId": parent_id, "raylane.role": "trial"})
    cb.retry_delays, cb.flush_timeout_s = (0.2, 0.5, 1.0), flush_timeout_s
    with mlflow_globals_restored():
        cb.setup()
    return client, experiment_id, parent_id, cb


def run_trial(cb, trial_id: str, scores: list[float]) -> Trial:
    t = Trial("train_trial", config={"max_depth": 3}, trial_id=trial_id, stub=True)
    cb.log_trial_start(t)
    for i, score in enumerate(scores, start=1):
        cb.log_trial_result(i, t, {"training_iteration": i, "valid_roc_auc": score})
    cb.log_trial_end(t)
    return t


def trial_runs(client, experiment_id: str, parent_id: str) -> dict:
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {r.data.tags["trial_name"]: r for r in runs}


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_an_mlflow_outage_during_the_search_loses_no_trial(server):
    client, exp, parent, cb = setup_callback(server.url, "outage", flush_timeout_s=300)
    first = run_trial(cb, "a1", [0.6, 0.7])
    wait_for(lambda: len(trial_runs(client, exp, parent)) == 1 and
             next(iter(trial_runs(client, exp, parent).values())).info.status == "FINISHED",
             "the first trial's run")
    server.stop()
    second = run_trial(cb, "b2", [0.5, 0.55, 0.65])  # the server is down: buffered
    wait_for(lambda: getattr(cb, "_attempt", 0) > 0 or (getattr(cb, "_pending", None) and
             any(f.done() and f.exception() for f in cb._pending)), "a failed attempt")
    server.start()
    cb.on_experiment_end([first, second])  # the old callback raised here

    runs = trial_runs(client, exp, parent)
    assert set(runs) == {str(first), str(second)}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    history = client.get_metric_history(runs[str(second)].info.run_id, "valid_roc_auc")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.55), (3, 0.65)]
    parent_run_ = client.get_run(parent)
    assert parent_run_.data.metrics["trials.unlogged_results"] == 0
    assert parent_run_.data.tags["raylane.trial_logging"] == "complete"


def test_an_outage_past_the_end_is_reported_not_raised(server, caplog):
    client, exp, parent, cb = setup_callback(server.url, "long-outage", flush_timeout_s=2)
    first = run_trial(cb, "a1", [0.6])
    wait_for(lambda: len(trial_runs(client, exp, parent)) == 1 and
             next(iter(trial_runs(client, exp, parent).values())).info.status == "FINISHED",
             "the first trial's run")
    server.stop()
    second = run_trial(cb, "b2", [0.5, 0.55])
    with caplog.at_level(logging.WARNING, logger="raylane.tracking.trials"):
        cb.on_experiment_end([first, second])  # returns: the search keeps its trials
    assert cb.unlogged_results == 2
    assert "2 of 3 trial results and 3 other calls could not be logged" in caplog.text
    assert "could not record the trial logging outcome" in caplog.text
    server.start()
    runs = trial_runs(client, exp, parent)
    assert set(runs) == {str(first)} and runs[str(first)].info.status == "FINISHED"
