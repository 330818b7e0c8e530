"""One replica's lifecycle, without Ray: load, reconfigure, housekeeping (telemetry, prediction
log, registry polling) and health. :class:`raylane.serving.app.ModelServer` is this class as a
Ray Serve deployment."""

from __future__ import annotations

import asyncio
import logging
import time

from raylane.model_store import load_registered_model
from raylane.serving.dataplane import DataPlane
from raylane.serving.predictor import Fetch, ModelHolder, Resolve, registry_version
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry

log = logging.getLogger("ray.serve")


class Replica:
    """A replica's model holder, data plane and background housekeeping."""

    housekeeping_period_s = 0.5

    def __init__(
        self, telemetry: ServingTelemetry | None = None, fetch: Fetch = load_registered_model,
        resolve: Resolve = registry_version,
    ) -> None:
        self.telemetry = telemetry or ServingTelemetry()
        self.holder = ModelHolder(on_load=self.telemetry.model_load, fetch=fetch,
                                  resolve=resolve)
        self.plane = DataPlane(self.holder, self.telemetry)
        self._swap_lock = asyncio.Lock()
        self._housekeeping: asyncio.Task | None = None

    async def reconfigure(self, user_config: dict) -> None:
        """Apply a new ``user_config``. The first call must load the model (else not ready)."""
        settings = ServingSettings.model_validate(user_config or {})
        async with self._swap_lock:
            await asyncio.to_thread(
                self.holder.ensure, settings.model_uri, settings.resolved_tracking_uri(),
                settings.intra_op_threads,
            )
        old_log = self.plane.configure(settings)
        if old_log is not None:
            await asyncio.to_thread(old_log.flush)
        self.configured()
        if self._housekeeping is None or self._housekeeping.done():
            self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())

    def configured(self) -> None:
        """Called after each reconfigure (the deployment binds its routes here)."""

    async def poll(self) -> None:
        """Serve what the configured URI points at now (alias moved: swap)."""
        s = self.plane.settings
        async with self._swap_lock:
            await asyncio.to_thread(
                self.holder.ensure, s.model_uri, s.resolved_tracking_uri(), s.intra_op_threads,
            )

    async def _housekeep(self) -> None:
        """Flush telemetry, poll the registry (alias moved? swap), flush the prediction log."""
        last_poll = time.monotonic()
        while True:
            await asyncio.sleep(self.housekeeping_period_s)
            await self.telemetry.flush_async()
            s = self.plane.settings
            plog = self.plane.plog
            if plog is not None and plog._rows:
                plog._maybe_flush()
            if s.poll_interval_s <= 0 or time.monotonic() - last_poll < s.poll_interval_s:
                continue
            last_poll = time.monotonic()
            try:
                await self.poll()
            except Exception:  # ensure() records failures; keep polling whatever happens
                log.exception("raylane: registry poll failed")

    async def check_health(self) -> None:
        if self.holder.current is None:
            raise RuntimeError("no model loaded")

    async def stop(self) -> None:
        """Stop housekeeping (tests; a replica's ends with its process)."""
        task, self._housekeeping = self._housekeeping, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
