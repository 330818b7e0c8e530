"""Which MLflow failures are worth a retry (raylane/tracking/errors.py)."""

from __future__ import annotations

import socket

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

from raylane.tracking.errors import is_transient


def test_a_refused_connection_is_transient(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed once the block ends
    with pytest.raises(MlflowException) as info:
        MlflowClient(url).get_experiment_by_name("x")
    assert is_transient(info.value)


@pytest.mark.parametrize(("code", "transient"), [
    ("TEMPORARILY_UNAVAILABLE", True), ("INTERNAL_ERROR", True), ("503", True),
    ("REQUEST_LIMIT_EXCEEDED", True), ("INVALID_PARAMETER_VALUE", False),
    ("RESOURCE_DOES_NOT_EXIST", False), ("PERMISSION_DENIED", False),
])
def test_server_answers_by_error_code(code, transient):
    assert is_transient(RestException({"error_code": code, "message": "m"})) is transient


def test_what_the_caller_did_wrong_is_not_transient(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("gone")
    client.delete_experiment(experiment)
    with pytest.raises(MlflowException) as info:
        client.create_run(experiment)
    assert not is_transient(info.value)
    assert not is_transient(KeyError("run id"))
