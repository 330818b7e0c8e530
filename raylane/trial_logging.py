"""Per-trial MLflow child runs, logged without holding up the search.

Ray's ``MLflowLoggerCallback`` writes each metric of each result with its own request (and looks
the run up first), on Tune's driver loop: a trial waits in ``tune.report`` until that is done.
Here a result is one ``log_batch``, sent asynchronously; a trial's run is flushed before it ends.
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.experiment import Trial
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION
from ray.tune.utils import flatten_dict


class BatchedMLflowLoggerCallback(MLflowLoggerCallback):
    """``MLflowLoggerCallback`` with one asynchronous ``log_batch`` per result."""

    def setup(self, *args, **kwargs) -> None:
        super().setup(*args, **kwargs)
        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        step = result.get(TIMESTEPS_TOTAL) or result[TRAINING_ITERATION]
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(value), now, step)
            for key, value in flatten_dict(result).items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        ]
        self._client.log_batch(self._trial_runs[trial], metrics=metrics, synchronous=False)

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        if trial not in self._trial_runs:  # failed before it started: nothing was logged
            return
        mlflow.flush_async_logging()
        super().log_trial_end(trial, failed)
