"""The Ray Serve deployment: a registered ONNX model over HTTP (``raylane.serving.app:app``).

Routes come from the protocols registered in :mod:`raylane.serving.protocols`: ``/predict``,
``/healthz`` and ``/metadata``; the Open Inference Protocol (``/v2/...``); the MLflow scoring
protocol (``/invocations``, ``/ping``, ``/health``, ``/version``); and the OpenAPI schema at
``/openapi.json`` (``/docs``). Configuration arrives as the deployment's ``user_config`` (see
``serve/config.yaml`` and :mod:`raylane.serving.settings`).
"""

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from ray import serve

from raylane.serving.api import bind, build_api
from raylane.serving.dataplane import DataPlane
from raylane.serving.predictor import ModelHolder
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry

log = logging.getLogger("ray.serve")
DEFAULT_USER_CONFIG = {"model_uri": os.environ.get("RAYLANE_MODEL_URI", "models:/credit@champion")}

api = build_api(PROTOCOLS)


@serve.deployment(
    name="RaylaneModel",
    max_ongoing_requests=64,
    health_check_period_s=10,
    user_config=DEFAULT_USER_CONFIG,
)
@serve.ingress(api)
class ModelServer:
    """One replica's lifecycle: load, reconfigure, poll the registry, health. The routes are the
    protocols'; they serve :attr:`plane`."""

    def __init__(self) -> None:
        self.telemetry = ServingTelemetry()
        self.holder = ModelHolder(on_load=self.telemetry.model_load)
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
        app = getattr(self, "app", None)  # the replica's FastAPI app (set by @serve.ingress)
        if app is not None:
            bind(app, self.plane, PROTOCOLS)
        if self._housekeeping is None or self._housekeeping.done():
            self._housekeeping = asyncio.get_running_loop().create_task(self._housekeep())

    async def _housekeep(self) -> None:
        """Flush telemetry, poll the registry (alias moved? swap), flush the prediction log."""
        last_poll = time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            await self.telemetry.flush_async()
            s = self.plane.settings
            plog = self.plane.plog
            if plog is not None and plog._rows:
                plog._maybe_flush()
            if s.poll_interval_s <= 0 or time.monotonic() - last_poll < s.poll_interval_s:
                continue
            last_poll = time.monotonic()
            try:
                async with self._swap_lock:
                    await asyncio.to_thread(
                        self.holder.ensure, s.model_uri, s.resolved_tracking_uri(),
                        s.intra_op_threads,
                    )
            except Exception:  # ensure() records failures; keep polling whatever happens
                log.exception("raylane: registry poll failed")

    def check_health(self) -> None:
        if self.holder.current is None:
            raise RuntimeError("no model loaded")

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # Ray may be shutting down: best effort
            self.telemetry.flush()
        if self.plane.plog is not None:
            self.plane.plog.flush()


app = ModelServer.bind()


def build_app(args: dict[str, Any]) -> Any:
    """Application builder: ``serve run raylane.serving.app:build_app model_uri=models:/x/1``."""
    return ModelServer.options(user_config={**DEFAULT_USER_CONFIG, **args}).bind()
