"""One replica's lifecycle, without Ray: load, reconfigure, housekeeping (telemetry, prediction
log, registry polling) and health. :class:`raylane.serving.app.ModelServer` is this class as a
Ray Serve deployment."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

from raylane.model.store import load_registered_model
from raylane.serving.dataplane import DataPlane
from raylane.serving.predictor import (
    Fetch,
    ModelHolder,
    Resolve,
    failure_kind,
    registry_version,
    transient_cause,
)
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry

log = logging.getLogger("ray.serve")


class Replica:
    """A replica's model holder, data plane and background housekeeping."""

    housekeeping_period_s = 0.5
    # a first load that failed transiently (registry down) is retried after these seconds,
    # doubling from the first up to the second
    first_load_backoff_s = (1.0, 10.0)

    def __init__(
        self, telemetry: ServingTelemetry | None = None, fetch: Fetch = load_registered_model,
        resolve: Resolve = registry_version,
    ) -> None:
        self.telemetry = telemetry or ServingTelemetry()
        self.holder = ModelHolder(on_load=self.telemetry.model_load, fetch=fetch,
                                  resolve=resolve)
        self.plane = DataPlane(self.holder, self.telemetry)
        self.housekeeping_failures: dict[str, int] = {}  # step -> failures so far
        self.housekeeping_restarts = 0
        self._swap_lock = asyncio.Lock()
        self._housekeeping: asyncio.Task | None = None
        self._last_poll = time.monotonic()
        self._load_status: dict | None = None

    async def reconfigure(self, user_config: dict) -> None:
        """Apply a new ``user_config``. The first call must load the model (else not ready).

        The model and the settings change together under the swap lock, so a registry poll
        under way (which reads the settings under the same lock) cannot undo the change.
        """
        settings = ServingSettings.model_validate(user_config or {})
        async with self._swap_lock:
            await self._load(settings)
            old_log = self.plane.configure(settings)
        if old_log is not None:
            await asyncio.to_thread(old_log.flush)
        self.configured()
        if self._housekeeping is None or self._housekeeping.done():
            self._start_housekeeping()

    async def _load(self, s: ServingSettings) -> None:
        """Serve what ``s.model_uri`` points at. Without a model yet, a transient failure (the
        registry is down) is retried with backoff until the model loads: the replica stays
        starting, so Ray Serve sends it no traffic, instead of failing (after three failed
        starts Ray Serve gives the deployment up). Any other first-load failure raises."""
        delay, cap = self.first_load_backoff_s
        while True:
            try:
                await asyncio.to_thread(
                    self.holder.ensure, s.model_uri, s.resolved_tracking_uri(),
                    s.intra_op_threads,
                )
                return
            except Exception as exc:
                if self.holder.current is not None or failure_kind(exc) != "transient":
                    raise
                log.warning("raylane: no model yet and the registry is unreachable (%s); "
                            "retrying in %.0fs", transient_cause(exc), delay)
            await asyncio.sleep(delay)
            delay = min(cap, delay * 2)

    def configured(self) -> None:
        """Called after each reconfigure (the deployment binds its routes here)."""

    async def poll(self) -> None:
        """Serve what the configured URI points at now (alias moved, or a failed load is due
        for a retry: load and swap)."""
        async with self._swap_lock:
            s = self.plane.settings  # read under the lock: a reconfigure may have just run
            await asyncio.to_thread(
                self.holder.ensure, s.model_uri, s.resolved_tracking_uri(), s.intra_op_threads,
            )

    def _poll_due(self) -> bool:
        interval = self.plane.settings.poll_interval_s
        if interval > 0 and time.monotonic() - self._last_poll >= interval:
            return True
        return self.holder.retry_due()

    async def _housekeep(self) -> None:
        """Flush telemetry and the prediction log, poll the registry when due. Each step's
        failure is logged and counted, and never stops the others or the next round."""
        while True:
            await asyncio.sleep(self.housekeeping_period_s)
            await self._step("telemetry", self.telemetry.flush_async)
            await self._step("prediction_log", self._flush_prediction_log)
            await self._step("load_status", self._report_load_status)
            if self._poll_due():
                self._last_poll = time.monotonic()
                await self._step("registry_poll", self.poll)

    async def _step(self, name: str, step: Callable[[], Any]) -> None:
        try:
            result = step()
            if inspect.isawaitable(result):
                await result
        except Exception:
            n = self.housekeeping_failures[name] = self.housekeeping_failures.get(name, 0) + 1
            if n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th...: a step failing every round
                log.exception("raylane: housekeeping step %s failed (%d times)", name, n)
            with contextlib.suppress(Exception):  # the metrics themselves may be what fails
                self.telemetry.housekeeping_failed(name)

    async def _flush_prediction_log(self) -> None:
        plog = self.plane.plog
        if plog is None:
            return
        plog.maybe_flush()
        self.telemetry.prediction_log_dropped(plog.dropped_rows)

    def _report_load_status(self) -> None:
        status = self.holder.status()
        if status != self._load_status and self.holder.current is not None:
            self.telemetry.load_status(self.holder.current.name, status)
            self._load_status = status

    def _start_housekeeping(self) -> None:
        self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())

    async def check_health(self) -> None:
        """Unhealthy without a model. A housekeeping task that ended (it should not) is
        logged, counted and restarted: the model keeps being polled for."""
        if self.holder.current is None:
            raise RuntimeError("no model loaded")
        task = self._housekeeping
        if task is not None and task.done():
            exc = None if task.cancelled() else task.exception()
            self.housekeeping_restarts += 1
            log.error("raylane: housekeeping ended (%r); restarting it (restart %d)", exc,
                      self.housekeeping_restarts)
            with contextlib.suppress(Exception):
                self.telemetry.housekeeping_failed("restart")
            self._start_housekeeping()

    async def stop(self) -> None:
        """Stop housekeeping (tests; a replica's ends with its process)."""
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
