"""The Ray Serve deployment: a registered ONNX model over HTTP (``raylane.serving.app:app``).

Routes come from the protocols registered in :mod:`raylane.serving.protocols`: ``/predict``,
``/healthz`` and ``/metadata``; the Open Inference Protocol (``/v2/...``); the MLflow scoring
protocol (``/invocations``, ``/ping``, ``/health``, ``/version``); and the OpenAPI schema at
``/openapi.json`` (``/docs``). Configuration arrives as the deployment's ``user_config`` (see
``serve/config.yaml`` and :mod:`raylane.serving.settings`).
"""

import contextlib
import logging
import os
from typing import Any

from ray import serve

from raylane.serving.api import bind, build_api
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.replica import Replica

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
class ModelServer(Replica):
    """One replica (:class:`~raylane.serving.replica.Replica`: load, reconfigure, poll the
    registry, health) as a Serve deployment. The routes are the protocols'; they serve
    :attr:`plane`."""

    def configured(self) -> None:
        app = getattr(self, "app", None)  # the replica's FastAPI app (set by @serve.ingress)
        if app is not None:
            bind(app, self.plane, PROTOCOLS)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # Ray may be shutting down: best effort
            self.telemetry.flush()
        if self.plane.plog is not None:
            self.plane.plog.flush()


app = ModelServer.bind()


def build_app(args: dict[str, Any]) -> Any:
    """Application builder: ``serve run raylane.serving.app:build_app model_uri=models:/x/1``."""
    return ModelServer.options(user_config={**DEFAULT_USER_CONFIG, **args}).bind()
