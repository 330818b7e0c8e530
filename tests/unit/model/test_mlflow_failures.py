"""What an MLflow failure is (raylane/model/mlflow_failures.py), and that training, serving and
the console read it alike.

The failures are real: MLflow's client and ``requests`` against a small HTTP server on a free
port answering what a proxy or an MLflow server would, a closed port, a SQLite file that cannot
be opened. Where a table row says "was", the three hand-written rules this module replaced
disagreed on it.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import sqlalchemy
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from support.net import closed_port_url

from raylane.console.registry_access import NotAllowed, NotFound, Unreachable, translate
from raylane.model.mlflow_failures import chain, http_status, is_missing, is_transient
from raylane.model.store import ModelNotFoundError
from raylane.serving.load_failures import failure_kind


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body, content_type = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@dataclass
class Server:
    url: str
    httpd: http.server.ThreadingHTTPServer

    def answers(self, status: int, body: str = "", content_type: str = "text/plain") -> str:
        self.httpd.answer = (status, body.encode(), content_type)  # type: ignore[attr-defined]
        return self.url


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{httpd.server_port}", httpd)
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(autouse=True)
def no_retries(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def raised(call) -> BaseException:
    with pytest.raises(BaseException) as info:
        call()
    return info.value


def wrapped(exc: BaseException) -> BaseException:
    """As raylane.model.store reports a registry failure to serving."""
    try:
        raise ModelNotFoundError(f"models:/credit@champion: {exc}") from exc
    except ModelNotFoundError as err:
        return err


def assert_read_alike(exc: BaseException, *, transient: bool, missing: bool,
                      status: int | None, console: type, serving: str) -> None:
    assert is_transient(exc) is transient
    assert is_missing(exc) is missing
    assert http_status(exc) == status
    assert type(translate(exc)) is console
    assert failure_kind(exc) == serving
    assert failure_kind(wrapped(exc)) == ("transient" if transient else "permanent")


def test_a_refused_connection_is_transient_everywhere():
    exc = raised(lambda: MlflowClient(closed_port_url()).get_experiment_by_name("x"))
    assert_read_alike(exc, transient=True, missing=False, status=None, console=Unreachable,
                      serving="transient")


def test_a_403_without_a_json_body_is_refused_not_transient(server):
    """An auth proxy's plain 403: MLflow says "API request to endpoint ... failed with error code
    403" (was transient for training's retry, which read any "API request to" as no answer)."""
    url = server.answers(403, "Forbidden")
    exc = raised(lambda: MlflowClient(url).get_experiment_by_name("x"))
    assert_read_alike(exc, transient=False, missing=False, status=403, console=NotAllowed,
                      serving="unknown")


def test_a_401_asks_for_credentials(server):
    url = server.answers(401, "Unauthorized")
    exc = raised(lambda: MlflowClient(url).get_experiment_by_name("x"))
    assert http_status(exc) == 401 and not is_transient(exc)
    assert "MLFLOW_TRACKING_USERNAME" in str(translate(exc))


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_server_that_cannot_answer_for_now_is_transient(server, status):
    url = server.answers(status, "<html>no server is available</html>", "text/html")
    exc = raised(lambda: MlflowClient(url).get_experiment_by_name("x"))
    assert_read_alike(exc, transient=True, missing=False, status=None, console=Unreachable,
                      serving="transient")


@pytest.mark.parametrize(("status", "transient", "console", "serving"), [
    (503, True, Unreachable, "transient"),  # was not transient for training's retry
    (429, True, Unreachable, "transient"),
    (403, False, NotAllowed, "unknown"),
])
def test_the_artifact_stores_http_answers(server, status, transient, console, serving):
    url = server.answers(status, "busy")
    exc = raised(lambda: requests.get(f"{url}/artifacts/model.onnx", timeout=5)
                 .raise_for_status())
    assert_read_alike(exc, transient=transient, missing=False, status=status, console=console,
                      serving=serving)


def test_an_artifact_the_store_does_not_have_is_missing(server, tmp_path):
    """Was "unreachable" on the console; serving gives up on it."""
    url = server.answers(404, "Not Found")
    exc = raised(lambda: download_artifacts(
        artifact_uri=f"{url}/api/2.0/mlflow-artifacts/artifacts/1/model/MLmodel",
        dst_path=str(tmp_path)))
    assert_read_alike(exc, transient=False, missing=True, status=404, console=NotFound,
                      serving="permanent")


def test_a_local_stores_missing_file_is_missing(tmp_path):
    """Was "unreachable" on the console."""
    exc = raised(lambda: (tmp_path / "model.onnx").read_bytes())
    assert_read_alike(exc, transient=False, missing=True, status=None, console=NotFound,
                      serving="permanent")


def test_a_sqlite_file_that_cannot_be_opened_is_transient(tmp_path):
    """SQLite locked or unopenable (was "unknown" for serving: given up after three tries)."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}")  # a directory, not a file
    exc = raised(lambda: engine.connect())
    assert_read_alike(exc, transient=True, missing=False, status=None, console=Unreachable,
                      serving="transient")


def test_a_request_that_cannot_be_sent_is_not_transient():
    """No retry brings a malformed address back (was transient for serving: any
    RequestException)."""
    exc = raised(lambda: requests.get("nonsense://registry/model", timeout=5))
    assert_read_alike(exc, transient=False, missing=False, status=None, console=Unreachable,
                      serving="unknown")


def test_mlflows_own_internal_error_is_not_a_server_answer():
    """Raised in process (no server answered): was transient for serving, not for training."""
    exc = MlflowException("could not read the model's MLmodel")
    assert exc.get_http_status_code() == 500
    assert not is_transient(exc) and failure_kind(exc) == "unknown"


@pytest.mark.parametrize(("code", "transient", "console"), [
    ("TEMPORARILY_UNAVAILABLE", True, Unreachable), ("INTERNAL_ERROR", True, Unreachable),
    ("503", True, Unreachable), ("DEADLINE_EXCEEDED", True, Unreachable),
    # was NotFound on the console (429 < 500)
    ("REQUEST_LIMIT_EXCEEDED", True, Unreachable),
    ("INVALID_PARAMETER_VALUE", False, NotFound), ("RESOURCE_DOES_NOT_EXIST", False, NotFound),
    ("PERMISSION_DENIED", False, NotAllowed),
])
def test_a_servers_json_answer_by_error_code(code, transient, console):
    exc = RestException({"error_code": code, "message": "m"})
    assert is_transient(exc) is transient
    assert type(translate(exc)) is console
    assert (failure_kind(exc) == "transient") is transient


def test_what_the_caller_did_wrong_is_not_transient(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("gone")
    client.delete_experiment(experiment)
    with pytest.raises(MlflowException) as info:
        client.create_run(experiment)
    assert not is_transient(info.value)
    assert type(translate(info.value)) is NotFound
    assert not is_transient(KeyError("run id"))


def test_the_chain_ends_on_a_cycle():
    a, b = ValueError("a"), ValueError("b")
    a.__context__, b.__context__ = b, a
    assert list(chain(a)) == [a, b]


def test_a_wrapped_in_process_not_found_is_missing():
    """MLflow wrapping its own RESOURCE_DOES_NOT_EXIST in a generic INTERNAL_ERROR: the
    specific status wins."""
    try:
        try:
            raise MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST)
        except MlflowException as inner:
            raise MlflowException("failed to download the model") from inner
    except MlflowException as outer:
        exc = outer
    assert http_status(exc) == 404 and is_missing(exc) and not is_transient(exc)
    assert failure_kind(exc) == "permanent" and type(translate(exc)) is NotFound
