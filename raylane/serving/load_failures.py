"""Why a model failed to load, and whether trying again may help: ``transient`` (network,
timeout, registry 5xx/429: retry with backoff), ``permanent`` (the version itself is unusable:
give up) or ``unknown``; and a stable reason to show clients without the exception's text.
"""

from __future__ import annotations

import requests
from google.protobuf.message import DecodeError
from mlflow.exceptions import MlflowException
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph as OrtInvalidGraph
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf as OrtInvalidProtobuf
from pydantic import ValidationError

from raylane.model import mlflow_failures
from raylane.model.onnx_model import UnsafeModelError
from raylane.model.store import ModelNotFoundError
from raylane.serving.loaded_model import WarmupError


def failure_kind(exc: BaseException) -> str:
    """``transient`` (network, timeout, registry 5xx/429: retry), ``permanent`` (the version
    itself is unusable: unsafe or corrupt graph, failed warm-up, no schema: give up) or
    ``unknown``. The cause chain counts: the registry's errors arrive wrapped."""
    if mlflow_failures.is_transient(exc):
        return "transient"
    if isinstance(exc, (UnsafeModelError, WarmupError, ModelNotFoundError, DecodeError,
                        ValidationError, OrtFail, OrtInvalidGraph, OrtInvalidProtobuf)):
        return "permanent"
    if mlflow_failures.is_missing(exc):
        return "permanent"  # the version's artifacts are gone: retrying cannot bring them back
    return "unknown"


def failure_reason(exc: BaseException) -> str:
    """A stable reason for a failed load, without the exception's text (which may hold hosts,
    paths or credentials): ``artifact_missing``, ``model_not_found``, ``warmup_failed``,
    ``unsafe_model`` or ``load_failed``."""
    if isinstance(exc, WarmupError):
        return "warmup_failed"
    if isinstance(exc, UnsafeModelError):
        return "unsafe_model"
    if failure_kind(exc) == "transient":
        return "load_failed"
    if isinstance(exc, ModelNotFoundError):
        return "model_not_found"
    link: BaseException | None = exc
    for _ in range(20):  # the cause chain, bounded
        if link is None:
            break
        if _missing(link):
            return "artifact_missing"
        link = link.__cause__ or link.__context__
    return "load_failed"


def _missing(exc: BaseException) -> bool:
    """The artifact store has no such file (a local store's MlflowException, a proxied
    store's HTTP 404)."""
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code == 404
    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() == 404
    return isinstance(exc, FileNotFoundError)


def transient_cause(exc: BaseException | None) -> str:
    """The type name of the first transient error in the cause chain that is not a wrapper
    (ModelNotFoundError, MlflowException), e.g. ``ConnectionError``."""
    link, found = exc, None
    for _ in range(20):
        if link is None:
            break
        if _transient(link):
            found = found or link
            if not isinstance(link, (ModelNotFoundError, MlflowException)):
                return type(link).__name__
        link = link.__cause__ or link.__context__
    return type(found or exc).__name__


def _transient(exc: BaseException) -> bool:
    return mlflow_failures.transient_link(exc)
