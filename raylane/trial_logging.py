"""Per-trial MLflow child runs, logged without holding up the search.

Ray's ``MLflowLoggerCallback`` talks to MLflow on Tune's driver loop: one request per parameter
and per metric, and at a trial's end ``set_terminated``, which also shuts MLflow's async logging
queue down (a thread join that takes up to a second). While the loop waits, no result is taken
and no trial is started, so trials sit idle. Here every MLflow call for a trial (create the run
with its params, one ``log_batch`` per result, end the run) goes, in order, to one background
thread; the search waits for that thread only when the experiment ends.

When the experiment ends before a trial did (a stopped job: Tune saves its state and stops
running trials without reporting their end), that trial's run is ended as KILLED, not left
RUNNING; a resumed search re-runs the trial under a new child run.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.experiment import Trial
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION
from ray.tune.utils import flatten_dict

# MLflow rejects longer parameter values.
MAX_PARAM_LENGTH = 6000


class BatchedMLflowLoggerCallback(MLflowLoggerCallback):
    """``MLflowLoggerCallback`` whose MLflow calls run in order on one background thread."""

    def setup(self, *args, **kwargs) -> None:
        super().setup(*args, **kwargs)
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-trials")
        self._pending: list[Future] = []
        self._run_ids: dict[str, str] = {}  # trial id -> run id; read and written on the thread
        self._open: set[str] = set()  # run ids not ended yet; on the thread

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; threads and clients stay behind.
        state = dict(self.__dict__)
        for name in ("_client", "_executor", "_pending", "_run_ids", "_open"):
            state.pop(name, None)
        return state

    def _submit(self, fn, *args) -> None:
        self._pending = [f for f in self._pending if not f.done() or f.exception()]
        self._pending.append(self._executor.submit(fn, *args))

    def log_trial_start(self, trial: Trial) -> None:
        tags = {**self.tags, "trial_name": str(trial)}
        params = flatten_dict(trial.config)
        self._submit(self._start_run, trial.trial_id, str(trial), tags, params)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        step = result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, step)
            for key, value in flatten_dict(result).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        self._submit(self._log_metrics, trial.trial_id, metrics)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        self._submit(self._end_run, trial.trial_id, "FAILED" if failed else "FINISHED")

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        """Wait until every trial's run is written, end unfinished trials' runs as KILLED;
        raise the first MLflow error, if any."""
        self._submit(self._end_open_runs)
        self._executor.shutdown(wait=True)
        errors = [f.exception() for f in self._pending if f.exception() is not None]
        if errors:
            raise RuntimeError(
                f"logging trials to MLflow at {self.tracking_uri} failed "
                f"({len(errors)} calls): {errors[0]}"
            ) from errors[0]

    # --- on the background thread

    def _start_run(self, trial_id: str, name: str, tags: dict, params: dict) -> None:
        if trial_id in self._run_ids:  # a restarted trial keeps its run
            return
        run = self._client.create_run(self.mlflow_util.experiment_id, run_name=name, tags=tags)
        self._run_ids[trial_id] = run.info.run_id
        self._open.add(run.info.run_id)
        self._client.log_batch(run.info.run_id, params=[
            Param(key, str(value)[:MAX_PARAM_LENGTH]) for key, value in params.items()
        ])

    def _log_metrics(self, trial_id: str, metrics: list[Metric]) -> None:
        self._client.log_batch(self._run_ids[trial_id], metrics=metrics)

    def _end_run(self, trial_id: str, status: str) -> None:
        if trial_id in self._run_ids:  # failed before it started: nothing was logged
            self._client.set_terminated(self._run_ids[trial_id], status=status)
            self._open.discard(self._run_ids[trial_id])

    def _end_open_runs(self) -> None:
        for run_id in sorted(self._open):
            self._client.set_terminated(run_id, status="KILLED")
        self._open.clear()
