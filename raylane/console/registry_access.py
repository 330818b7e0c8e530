"""Reaching MLflow from the console: fail in seconds (not MLflow's minutes of retries) and turn
MLflow's errors into what the page says: unreachable, credentials refused, not allowed, missing."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from mlflow import MlflowClient

from raylane.model.mlflow_failures import http_status, is_missing, is_transient

_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": None}
_lock = threading.Lock()
_depth = 0
_saved: dict[str, str | None] = {}


class Unreachable(Exception):
    """MLflow did not answer, or refused the credentials: the page says so and what to do."""


class NotAllowed(Exception):
    """MLflow answered 403: these credentials may read but not do this."""


class NotFound(Exception):
    """The model, version or run does not exist."""


@contextlib.contextmanager
def quick(timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP client without retries and with ``timeout_s`` per request, for the
    duration (MLflow reads both per request; restored afterwards, nested calls share them)."""
    global _depth
    with _lock:
        if _depth == 0:
            for key, value in _QUICK.items():
                _saved[key] = os.environ.get(key)
                os.environ[key] = value if value is not None else str(max(1, int(timeout_s)))
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for key, value in _saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value


def connect(tracking_uri: str, timeout_s: float) -> MlflowClient:
    """A client for ``tracking_uri`` once it is known to answer (raises :class:`Unreachable`).

    A SQLite store that does not exist yet is reported, not created (MLflow would create it)."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///").split("?")[0])
        if not path.exists():
            raise Unreachable(f"no MLflow store at {path}")
    elif tracking_uri.startswith(("http://", "https://")):
        try:
            httpx.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc or 'no answer'}") from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def translate(exc: BaseException) -> Exception:
    """The console's exception for an MLflow failure (classified by
    :mod:`raylane.model.mlflow_failures`, as training and serving classify it)."""
    status = http_status(exc)
    if status == 403:
        return NotAllowed("MLflow refused (403 permission denied): these credentials may "
                          "read the registry but not change it")
    if status == 401:
        return Unreachable("MLflow refused the credentials (401): set MLFLOW_TRACKING_USERNAME "
                           "and MLFLOW_TRACKING_PASSWORD")
    if is_transient(exc):
        return Unreachable(_first_line(exc))
    if is_missing(exc) or (status is not None and status < 500):
        return NotFound(_first_line(exc))  # a bad name or parameter: nothing to show
    return Unreachable(_first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 300 else line[:297] + "..."


@contextlib.contextmanager
def mlflow_errors(timeout_s: float) -> Iterator[None]:
    """Run MLflow calls quickly and raise :class:`Unreachable`, :class:`NotAllowed` or
    :class:`NotFound` instead of MLflow's and the network's errors."""
    with quick(timeout_s):
        try:
            yield
        except (Unreachable, NotAllowed, NotFound):
            raise
        except Exception as exc:
            raise translate(exc) from exc
