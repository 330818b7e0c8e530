"""Per-trial MLflow child runs (raylane/tracking/trials.py), driven as Tune drives the callback:
its methods called directly with real ``Trial`` objects, against a real SQLite store."""

from __future__ import annotations

import logging
import sqlite3
import time
from types import SimpleNamespace

import pytest
from ray import cloudpickle
from ray.tune.experiment import Trial

from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import (
    mlflow_client,
    mlflow_globals_restored,
    parent_run,
)
from raylane.tracking.trials import BatchedMLflowLoggerCallback


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("trial_logging") / "mlflow.db"


@pytest.fixture()
def env(db, request):
    """A parent run in an experiment of this test's own, and a set-up callback for it."""
    uri = f"sqlite:///{db}"
    client = mlflow_client(uri)
    name = request.node.name
    experiment_id = open_experiment(client, name)
    with parent_run(client, experiment_id, run_name="job") as parent_id:
        pass
    callback = BatchedMLflowLoggerCallback(
        tracking_uri=uri, experiment_name=name,
        tags={"mlflow.parentRunId": parent_id, "raylane.role": "trial"},
    )
    with mlflow_globals_restored():  # Ray's setup sets MLflow's global tracking URI
        callback.setup()
    return SimpleNamespace(db=db, client=client, experiment_id=experiment_id,
                           parent_id=parent_id, callback=callback)


def trial(trial_id: str, **config) -> Trial:
    return Trial("train_trial", config=config, trial_id=trial_id, stub=True)


def result(iteration: int, score: float) -> dict:
    return {"training_iteration": iteration, "valid_roc_auc": score, "steps": 10 * iteration,
            "done": False, "trial_id": "ignored", "config": {"max_depth": 3}}


def children(env) -> dict[str, object]:
    runs = env.client.search_runs([env.experiment_id],
                                  f"tags.mlflow.parentRunId = '{env.parent_id}'")
    return {r.data.tags["trial_name"]: r for r in runs}


def test_child_runs_nest_under_the_parent_with_params_and_step_metrics(env):
    cb = env.callback
    ok, failed = trial("a1", max_depth=3, booster={"eta": 0.1}), trial("b2", max_depth=5)
    cb.log_trial_start(ok)
    cb.log_trial_start(failed)
    for i, score in enumerate([0.6, 0.7, 0.75], start=1):
        cb.log_trial_result(i, ok, result(i, score))
    cb.log_trial_result(1, failed, result(1, 0.5))
    cb.log_trial_end(ok)
    cb.log_trial_end(failed, failed=True)
    cb.on_experiment_end([ok, failed])

    runs = children(env)
    assert set(runs) == {str(ok), str(failed)}
    run = runs[str(ok)]
    assert run.info.status == "FINISHED" and runs[str(failed)].info.status == "FAILED"
    assert run.info.run_name == str(ok) and run.data.tags["raylane.role"] == "trial"
    assert run.data.params == {"max_depth": "3", "booster/eta": "0.1"}
    history = env.client.get_metric_history(run.info.run_id, "valid_roc_auc")
    assert [(m.step, m.value) for m in history] == [(1, 0.6), (2, 0.7), (3, 0.75)]
    assert [m.value for m in env.client.get_metric_history(run.info.run_id, "steps")] == \
        [10, 20, 30]
    # only numbers are metrics: booleans and strings are left out
    assert "done" not in run.data.metrics and "trial_id" not in run.data.metrics


def test_a_restarted_trial_keeps_its_run(env):
    cb, t = env.callback, trial("r1", max_depth=2)
    cb.log_trial_start(t)
    cb.log_trial_result(1, t, result(1, 0.6))
    cb.log_trial_start(t)  # Tune restarts a trial after a failure
    cb.log_trial_result(2, t, result(2, 0.7))
    cb.log_trial_end(t)
    cb.on_experiment_end([t])
    [run] = children(env).values()
    assert len(env.client.get_metric_history(run.info.run_id, "valid_roc_auc")) == 2


def test_mlflow_calls_run_off_the_calling_thread(env):
    """With the store locked, every callback method still returns at once: the calls wait on
    the background thread. (Made on the caller's thread, the first would block on the lock
    until MLflow's busy timeout and fail.)"""
    cb, t = env.callback, trial("s1", max_depth=4)
    lock = sqlite3.connect(env.db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        cb.log_trial_start(t)
        cb.log_trial_result(1, t, result(1, 0.6))
        cb.log_trial_end(t)
        # nothing has reached the store yet: only the parent run is in this experiment
        assert lock.execute("SELECT count(*) FROM runs WHERE experiment_id = ?",
                            (int(env.experiment_id),)).fetchone() == (1,)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    cb.on_experiment_end([t])  # waits for the background thread
    [run] = children(env).values()
    assert run.info.status == "FINISHED" and run.data.metrics["valid_roc_auc"] == 0.6


def test_calls_mlflow_refuses_are_reported_not_raised(env, caplog):
    """The experiment is deleted under the search: no run can be created. The search must
    not fail for it (the old callback raised here, throwing the finished trials away)."""
    cb, t = env.callback, trial("e1", max_depth=4)
    env.client.delete_experiment(env.experiment_id)
    cb.log_trial_start(t)
    cb.log_trial_result(1, t, result(1, 0.6))
    cb.log_trial_end(t)
    with caplog.at_level(logging.WARNING, logger="raylane.tracking.trials"):
        cb.on_experiment_end([t])
    assert cb.unlogged_results == 1
    assert "1 of 1 trial results and 1 other calls could not be logged" in caplog.text
    assert "must be in the 'active' state" in caplog.text


def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_results_of_a_run_mlflow_refuses_are_counted_on_the_parent(env):
    cb, t = env.callback, trial("d1", max_depth=4)
    cb.log_trial_start(t)
    wait_for(lambda: children(env), "the trial's run")
    [run] = children(env).values()
    env.client.delete_run(run.info.run_id)  # logging to it is refused from now on
    cb.log_trial_result(1, t, result(1, 0.6))
    cb.log_trial_result(2, t, result(2, 0.7))
    cb.log_trial_end(t)
    cb.on_experiment_end([t])
    parent = env.client.get_run(env.parent_id)
    assert parent.data.metrics["trials.unlogged_results"] == 2
    assert parent.data.tags["raylane.trial_logging"].startswith(
        "incomplete: 2 of 2 trial results")


def test_a_complete_log_says_so_on_the_parent(env):
    cb, t = env.callback, trial("c1", max_depth=4)
    cb.log_trial_start(t)
    cb.log_trial_result(1, t, result(1, 0.6))
    cb.log_trial_end(t)
    cb.on_experiment_end([t])
    parent = env.client.get_run(env.parent_id)
    assert parent.data.metrics["trials.unlogged_results"] == 0
    assert parent.data.tags["raylane.trial_logging"] == "complete"


def test_the_callback_pickles_without_its_thread_and_client(env):
    cb = env.callback
    clone = cloudpickle.loads(cloudpickle.dumps(cb))  # as Tune saves its callbacks
    assert not hasattr(clone, "_executor") and not hasattr(clone, "_client")
    assert clone.tags == cb.tags and clone.tracking_uri == cb.tracking_uri
    cb.on_experiment_end([])
