"""A version's files come only from the tracking server's artifact store, and its model.onnx must
match the sha256 recorded at registration: on a real SQLite MLflow store with real ONNX models,
through the loader serving uses and the champion loader judging uses."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from tiny_serving_model import ROWS, SCHEMA, tiny_onnx

from raylane.model.store import (
    DIGEST_TAG,
    ONNX_FILE,
    UntrustedModelError,
    check_source,
    load_registered_model,
)
from raylane.release.decision import load_champion
from raylane.tracking.registry import log_onnx_model, register_version, set_alias
from raylane.tracking.runs import ensure_experiment, mlflow_client, parent_run


@pytest.fixture()
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment(mlflow_client(uri), "provenance",
                                      artifact_location=str(tmp_path / "artifacts"))
    return uri, experiment_id


def register(uri: str, experiment_id: str) -> tuple[str, Path, str]:
    """A new version of ``credit`` as champion: its version, model.onnx path and run id."""
    client = mlflow_client(uri)
    with parent_run(client, experiment_id) as run_id:
        logged = log_onnx_model(client, run_id, tiny_onnx(), SCHEMA,
                                ROWS.head(2).astype(float, errors="ignore"),
                                pd.DataFrame({"y": [0.0, 1.0]}))
        mv = register_version(client, logged, "credit", run_id, {})
    set_alias(client, "credit", "champion", str(mv.version))
    return str(mv.version), Path(mv.source.removeprefix("file://")) / ONNX_FILE, run_id


def test_registration_records_the_digest_replicas_verify(registry):
    uri, experiment_id = registry
    version, onnx_path, _ = register(uri, experiment_id)
    mv = mlflow_client(uri).get_model_version("credit", version)
    assert mv.tags[DIGEST_TAG] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert load_registered_model("models:/credit@champion", uri).version == version


def test_a_tampered_model_onnx_is_refused(registry):
    uri, experiment_id = registry
    version, onnx_path, _ = register(uri, experiment_id)
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\x00")  # still loads: ONNX ignores it
    with pytest.raises(UntrustedModelError, match="recorded at registration"):
        load_registered_model("models:/credit@champion", uri)
    champion, model, problem = load_champion(mlflow_client(uri), "credit")
    assert str(champion.version) == version and model is None
    assert problem.kind == "broken" and "refused" in problem.message


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_GET(self):
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization")})
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture()
def elsewhere():
    """An HTTP server standing in for an attacker's: it records what it is sent."""
    _Recorder.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.seen
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("scheme", ["http", "mlflow-artifacts"])
def test_a_version_pointed_elsewhere_is_refused_before_any_request(registry, elsewhere,
                                                                    monkeypatch, scheme):
    uri, experiment_id = registry
    url, seen = elsewhere
    url = url.replace("http", scheme, 1)
    _, _, run_id = register(uri, experiment_id)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "serving-reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    client = mlflow_client(uri)
    mv = client.create_model_version("credit", source=f"{url}/model", run_id=run_id)
    set_alias(client, "credit", "champion", str(mv.version))
    with pytest.raises(UntrustedModelError, match="outside the tracking server's artifact store"):
        load_registered_model("models:/credit@champion", uri)
    _, model, problem = load_champion(client, "credit")
    assert model is None and problem.kind == "broken"
    assert seen == []  # nothing, credentials least of all, went to the other server


@pytest.mark.parametrize(("source", "tracking", "roots", "ok"), [
    ("mlflow-artifacts:/1/models/m-1/artifacts", "http://mlflow:5000", [], True),
    ("mlflow-artifacts://mlflow:5000/1/m/artifacts", "http://mlflow:5000", [], True),
    ("mlflow-artifacts://attacker.example/1/m/artifacts", "http://mlflow:5000", [], False),
    ("https://attacker.example/model", "http://mlflow:5000", [], False),
    ("/tmp/artifacts/1/m/artifacts", "http://mlflow:5000", [], False),  # a server's replica
    ("/tmp/artifacts/1/m/artifacts", "sqlite:////tmp/mlflow.db", [], True),
    ("file:///tmp/artifacts/1/m", "sqlite:////tmp/mlflow.db", [], True),
    ("s3://mlflow-bucket/artifacts/1/m", "http://mlflow:5000", ["s3://mlflow-bucket/artifacts"],
     True),
    ("s3://mlflow-bucket/artifacts-other/1/m", "http://mlflow:5000",
     ["s3://mlflow-bucket/artifacts"], False),
    ("s3://mlflow-bucket/artifacts/../x", "http://mlflow:5000", ["s3://mlflow-bucket/artifacts"],
     False),
])
def test_sources_are_checked_against_the_artifact_store(source, tracking, roots, ok):
    if ok:
        check_source(source, tracking, roots)
    else:
        with pytest.raises(UntrustedModelError):
            check_source(source, tracking, roots)
