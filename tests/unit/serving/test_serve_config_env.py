"""The replicas' MLflow client gives up on a registry call in seconds, not minutes.

MLflow's client retries a failed HTTP call 7 times with exponential backoff and waits up to 120 s
per attempt by default: a replica polling a registry that is down would hold its model-swap lock
for minutes. ``serve/config.yaml`` (also the RayService's ``serveConfigV2``) sets the bounds in
the application's ``runtime_env``, the environment Ray gives the replicas.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from support.net import closed_port_url

from raylane.deploy import render

ROOT = Path(__file__).resolve().parents[3]
SERVE_CONFIG = ROOT / "serve" / "config.yaml"
RAYSERVICE = ROOT / "kuberay" / "base" / "rayservice.yaml"
MAX_CALL_S = 30  # the longest a registry call may hold the swap lock


def replica_env(serve_text: str) -> dict[str, str]:
    (app,) = yaml.safe_load(serve_text)["applications"]
    return (app.get("runtime_env") or {}).get("env_vars") or {}


def test_the_serve_config_bounds_the_replicas_mlflow_calls():
    env = replica_env(SERVE_CONFIG.read_text())
    assert all(isinstance(v, str) for v in env.values()), env  # Ray wants strings
    retries = int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"])
    timeout = int(env["MLFLOW_HTTP_REQUEST_TIMEOUT"])
    assert 0 <= retries <= 1 and timeout > 0
    assert (retries + 1) * timeout <= MAX_CALL_S


def test_serve_accepts_it_as_the_applications_runtime_env():
    """What `serve run` / `serve deploy` / the RayService validate the config with."""
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    (app,) = schema.applications
    assert app.runtime_env == {"env_vars": replica_env(SERVE_CONFIG.read_text())}


def test_the_rayservice_carries_the_same_env():
    served = yaml.safe_load_all(render.render(SERVE_CONFIG, RAYSERVICE))
    (service,) = [d for d in served if d and d.get("kind") == "RayService"]
    assert replica_env(service["spec"]["serveConfigV2"]) == replica_env(SERVE_CONFIG.read_text())


def test_with_that_env_a_call_to_a_registry_that_is_down_fails_in_seconds(monkeypatch):
    for key, value in replica_env(SERVE_CONFIG.read_text()).items():
        monkeypatch.setenv(key, value)
    client = MlflowClient(tracking_uri=closed_port_url())  # connection refused
    start = time.monotonic()
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("credit", "champion")
    assert time.monotonic() - start < 10
