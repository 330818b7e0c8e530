"""The real serving app in-process: a data plane over a model, and a test client on it."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from raylane.serving.api import bind, build_api
from raylane.serving.dataplane import DataPlane
from raylane.serving.holder import ModelHolder
from raylane.serving.loaded_model import LoadedModel
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry


def make_plane(model: LoadedModel | None, settings: dict | None = None) -> DataPlane:
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    plane.configure(ServingSettings.model_validate(settings or {}))
    plane.holder.current = model
    return plane


def make_client(plane: DataPlane) -> TestClient:
    """A client of the app the deployment serves (every protocol), bound to ``plane``."""
    api = build_api(PROTOCOLS)
    bind(api, plane, PROTOCOLS)
    return TestClient(api)


def post(client: TestClient, path: str, body: Any, content_type: str | None = "application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {} if content_type is None else {"content-type": content_type}
    return client.post(path, content=data, headers=headers)
