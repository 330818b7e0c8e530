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

MLflow may be away for a while (a restarting server, a proxy answering 503): calls that fail
that way stay buffered, in order, and are retried with backoff, and at the experiment's end for
up to ``flush_timeout_s``. A call MLflow refuses for good (or one still failing then) is dropped
and counted. Logging never fails the search: the count is a warning and, on the parent run, the
metric ``trials.unlogged_results`` and the tag ``raylane.trial_logging``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.experiment import Trial
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION
from ray.tune.utils import flatten_dict

from raylane.model.mlflow_failures import is_transient
from raylane.model.tags import TRIAL_LOGGING

log = logging.getLogger(__name__)

# MLflow rejects longer parameter values.
MAX_PARAM_LENGTH = 6000
_THREAD_STATE = ("_client", "_executor", "_backlog", "_run_ids", "_open", "_retry_at",
                 "_attempt", "_unlogged", "_calls")


class BatchedMLflowLoggerCallback(MLflowLoggerCallback):
    """``MLflowLoggerCallback`` whose MLflow calls run in order on one background thread,
    buffered and retried while MLflow is unreachable."""

    # Seconds to wait before retrying after a transient failure; the last one repeats.
    retry_delays: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
    # At the experiment's end, how long to keep retrying calls MLflow has not taken yet.
    flush_timeout_s: float = 300.0

    def setup(self, *args, **kwargs) -> None:
        super().setup(*args, **kwargs)
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-trials")
        # Everything below is read and written on the background thread only.
        self._backlog: deque[tuple[Callable, tuple]] = deque()  # calls not done yet, in order
        self._retry_at = 0.0  # monotonic time before which the backlog is not retried
        self._attempt = 0  # transient failures in a row
        self._unlogged: dict[str, int] = {}  # call kind -> calls dropped
        self._calls: dict[str, int] = {}  # call kind -> calls made
        self._run_ids: dict[str, str] = {}  # trial id -> run id
        self._open: set[str] = set()  # run ids not ended yet

    @property
    def unlogged_results(self) -> int:
        """Trial results that could not be logged (read it after the experiment ended)."""
        return self._unlogged.get("_log_metrics", 0)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; threads and clients stay behind.
        state = dict(self.__dict__)
        for name in _THREAD_STATE:
            state.pop(name, None)
        return state

    def _submit(self, fn: Callable, *args) -> None:
        self._executor.submit(self._enqueue, fn, args)

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
        """Wait until every trial's run is written (retrying for up to ``flush_timeout_s``),
        end unfinished trials' runs as KILLED, and report what could not be logged. Never
        raises: a logging failure must not cost the search its finished trials."""
        done = self._executor.submit(self._finish)
        self._executor.shutdown(wait=True)
        if done.exception() is not None:  # a bug in the reporting itself; still not fatal
            log.error("trial logging to MLflow at %s: %s", self.tracking_uri, done.exception())

    # --- on the background thread

    def _enqueue(self, fn: Callable, args: tuple) -> None:
        self._calls[fn.__name__] = self._calls.get(fn.__name__, 0) + 1
        self._backlog.append((fn, args))
        if time.monotonic() >= self._retry_at:
            self._drain()

    def _drain(self) -> None:
        """Run buffered calls in order until one fails transiently (then back off)."""
        while self._backlog:
            fn, args = self._backlog[0]
            try:
                fn(*args)
            except Exception as exc:
                if is_transient(exc):
                    delay = self.retry_delays[min(self._attempt, len(self.retry_delays) - 1)]
                    if self._attempt == 0:
                        log.warning("MLflow at %s is unreachable (%s); buffering trial results "
                                    "and retrying", self.tracking_uri, exc)
                    self._attempt += 1
                    self._retry_at = time.monotonic() + delay
                    return
                self._backlog.popleft()
                self._drop(fn, exc)
                continue
            self._backlog.popleft()
            self._attempt, self._retry_at = 0, 0.0

    def _drop(self, fn: Callable, exc: BaseException | None) -> None:
        self._unlogged[fn.__name__] = self._unlogged.get(fn.__name__, 0) + 1
        if exc is not None:
            log.warning("MLflow refused a trial logging call (%s): %s", fn.__name__, exc)

    def _finish(self) -> None:
        self._calls["_end_open_runs"] = 1
        self._backlog.append((self._end_open_runs, ()))
        deadline = time.monotonic() + self.flush_timeout_s
        while True:
            self._drain()
            now = time.monotonic()
            if not self._backlog or now >= deadline:
                break
            time.sleep(max(0.0, min(self._retry_at, deadline) - now))
        while self._backlog:  # still failing at the deadline
            fn, _ = self._backlog.popleft()
            self._drop(fn, None)
        self._report()

    def _report(self) -> None:
        results = self.unlogged_results
        dropped = sum(self._unlogged.values())
        summary = (f"incomplete: {results} of {self._calls.get('_log_metrics', 0)} trial results "
                   f"and {dropped - results} other calls could not be logged") if dropped \
            else "complete"
        if dropped:
            log.warning("trial logging to MLflow at %s %s; the search and its results are "
                        "kept (Tune's experiment directory has every result)",
                        self.tracking_uri, summary.removeprefix("incomplete: "))
        parent = self.tags.get("mlflow.parentRunId")
        if not parent:
            return
        try:
            self._client.log_batch(
                parent, metrics=[Metric("trials.unlogged_results", results,
                                        int(time.time() * 1000), 0)],
                tags=[RunTag(TRIAL_LOGGING, summary)])
        except Exception as exc:
            log.warning("could not record the trial logging outcome (%s) on the parent run "
                        "%s: %s", summary, parent, exc)

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
