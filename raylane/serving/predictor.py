"""The model a replica serves: load from the registry, warm up, and swap safely.

A swap builds the new session and runs a warm-up prediction *before* it replaces the current
model (one attribute assignment, so in-flight requests finish on the model they started with).
If the new version fails to load or to warm up, the old one keeps serving and the failure is
recorded (log, metric, ``last_error`` and the load status shown by the metadata route); a
transient failure (network, registry 5xx) is retried with backoff on later polls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import requests
import urllib3
from google.protobuf.message import DecodeError
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from onnxruntime.capi.onnxruntime_pybind11_state import Fail as OrtFail
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph as OrtInvalidGraph
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf as OrtInvalidProtobuf
from pydantic import ValidationError

from raylane.model.onnx_model import OnnxModel, Prediction, UnsafeModelError
from raylane.model.schema import MISSING_CATEGORY, FeatureSchema
from raylane.model.store import (
    ModelNotFoundError,
    RegisteredModel,
    load_registered_model,
    resolve_version,
)

log = logging.getLogger("ray.serve")


class WarmupError(RuntimeError):
    """The model loaded but its warm-up prediction failed or produced unusable output."""


@dataclass
class LoadedModel:
    """A registered version with a ready ONNX Runtime session."""

    registered: RegisteredModel
    onnx: OnnxModel
    uri: str
    threads: int = 1  # ONNX Runtime intra-op threads of the session
    loaded_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return self.registered.name

    @property
    def version(self) -> str:
        return self.registered.version

    @property
    def schema(self) -> FeatureSchema:
        return self.registered.schema

    def predict(self, feeds: dict[str, np.ndarray]) -> Prediction:
        return self.onnx.run(feeds)


def warmup_feeds(schema: FeatureSchema, rows: int = 4) -> dict[str, np.ndarray]:
    """A few rows exercising missing values and known categories."""
    feeds = {}
    for col in schema.columns:
        if col.kind == "numeric":
            values = np.array([0.0, np.nan, 1.0, 10.0][:rows], dtype=np.float32)
        else:
            cats = (col.categories or []) + [MISSING_CATEGORY, "unseen-category"]
            values = np.array([cats[i % len(cats)] for i in range(rows)], dtype=object)
        feeds[col.name] = values.reshape(-1, 1)
    return feeds


def warm_up(model: OnnxModel, schema: FeatureSchema) -> None:
    """Run the graph once; raise :class:`WarmupError` unless the output is well-formed."""
    feeds = warmup_feeds(schema)
    try:
        pred = model.run(feeds)
    except Exception as exc:
        raise WarmupError(f"warm-up prediction failed: {exc}") from exc
    n = len(next(iter(feeds.values())))
    if schema.task == "classification":
        k = len(schema.class_labels or [])
        probs = pred.probabilities
        if probs is None or probs.shape != (n, k) or not np.isfinite(probs).all():
            raise WarmupError(f"warm-up: expected finite probabilities of shape {(n, k)}")
        if pred.labels.min() < 0 or pred.labels.max() >= k:
            raise WarmupError("warm-up: class index outside the schema's class labels")
    elif pred.values is None or pred.values.shape != (n,) or not np.isfinite(pred.values).all():
        raise WarmupError(f"warm-up: expected {n} finite regression values")


def open_model(registered: RegisteredModel, uri: str, intra_op_threads: int = 1) -> LoadedModel:
    """Open a session on a downloaded model and warm it up; raise on any failure."""
    onnx = OnnxModel(registered.onnx_bytes, registered.schema, intra_op_threads=intra_op_threads)
    warm_up(onnx, registered.schema)
    return LoadedModel(registered=registered, onnx=onnx, uri=uri, threads=intra_op_threads)


def load_model(uri: str, tracking_uri: str | None, intra_op_threads: int = 1) -> LoadedModel:
    """Download, open and warm up a registered model; raise on any failure."""
    return open_model(load_registered_model(uri, tracking_uri), uri, intra_op_threads)


def registry_version(uri: str, tracking_uri: str | None) -> str:
    """The version ``uri`` points at now in the registry (cheap: one registry call)."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv, _ = resolve_version(client, uri)
    return str(mv.version)


Fetch = Callable[[str, str | None], RegisteredModel]
Resolve = Callable[[str, str | None], str]
OnLoad = Callable[[str, str, str], None]

RETRY_BASE_S = 10.0  # first retry of a failed load; doubles per failed attempt ...
RETRY_MAX_S = 300.0  # ... up to this
MAX_UNKNOWN_ATTEMPTS = 3  # an error of no known kind is given up once it failed this often


def failure_kind(exc: BaseException) -> str:
    """``transient`` (network, timeout, registry 5xx/429: retry), ``permanent`` (the version
    itself is unusable: unsafe or corrupt graph, failed warm-up, no schema: give up) or
    ``unknown``. The cause chain counts: the registry's errors arrive wrapped."""
    chain, seen = [], set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        chain.append(link)
        link = link.__cause__ or link.__context__
    if any(_transient(link) for link in chain):
        return "transient"
    if isinstance(exc, (UnsafeModelError, WarmupError, ModelNotFoundError, DecodeError,
                        ValidationError, OrtFail, OrtInvalidGraph, OrtInvalidProtobuf)):
        return "permanent"
    if any(_missing(link) for link in chain):
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
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return _retryable(exc.response.status_code)  # e.g. the artifact store's 503, not 403
    if isinstance(exc, (ConnectionError, TimeoutError, requests.RequestException,
                        urllib3.exceptions.HTTPError)):
        return True
    return isinstance(exc, MlflowException) and _retryable(exc.get_http_status_code())


def _retryable(status: int) -> bool:
    return status >= 500 or status == 429


@dataclass
class PendingLoad:
    """A version the URI points at that failed to load (the replica serves another)."""

    uri: str
    version: str | None  # None: the registry could not even say which version
    attempts: int = 0
    reason: str = ""  # "<kind>: <exception type>", short enough for health and metrics
    gave_up: bool = False
    next_retry_at: float | None = None


class ModelHolder:
    """The current model of a replica, its load history and its swap policy.

    ``fetch`` downloads what a model URI points at and ``resolve`` names its version now (the
    MLflow registry by default); ``on_load(name, version, outcome)`` hears of every load
    (``loaded``, ``swapped``, ``failed``). A version that failed to load is retried with
    exponential backoff (:meth:`retry_due`) unless the failure is permanent or kept repeating;
    :meth:`status` reports it.
    """

    def __init__(
        self, on_load: OnLoad | None = None, fetch: Fetch = load_registered_model,
        resolve: Resolve = registry_version, clock: Callable[[], float] = time.time,
    ) -> None:
        self.current: LoadedModel | None = None
        self.last_error: dict | None = None
        self.pending: PendingLoad | None = None
        self._gave_up: set[tuple[str, str]] = set()  # (uri, version) known bad: not retried
        # whether the last registry call got an answer; since when; the last transient failure
        self.registry: dict = {"reachable": None, "since": None, "last_error": None}
        self._on_load = on_load or (lambda name, version, outcome: None)
        self._fetch = fetch
        self.resolve = resolve
        self._clock = clock

    def ensure(self, uri: str, tracking_uri: str | None, threads: int = 1) -> bool:
        """Serve what ``uri`` points at, in a session of ``threads`` intra-op threads. True when
        a (new) model was swapped in.

        Without a current model a failure raises (the replica must not become ready); with one,
        the failure is recorded (retried later if it may pass) and the current model stays.
        """
        version: str | None = None
        try:
            current = self.current
            if current is not None:
                version = self.resolve(uri, tracking_uri)
                self._registry_answered(None)
                if current.uri == uri and current.version == version:
                    self.pending = None  # the alias is back on what we serve
                    if current.threads == threads:
                        return False
                    # same version, new session settings: reopen it from its bytes
                    new = open_model(current.registered, uri, threads)
                else:
                    if not self._attempt_allowed(uri, version):
                        return False
                    new = open_model(self._fetch(uri, tracking_uri), uri, threads)
            else:
                new = open_model(self._fetch(uri, tracking_uri), uri, threads)
        except Exception as exc:
            self._registry_answered(exc)
            if self.current is None:
                self._record_failure(uri, None, exc)
                raise
            self._record_failure(uri, version, exc)
            return False
        self._registry_answered(None)
        outcome = "loaded" if self.current is None else "swapped"
        old = self.current
        self.current = new  # atomic for the event loop: later requests use the new model
        self.last_error = None
        self.pending = None
        self._on_load(new.name, new.version, outcome)
        log.info(
            "raylane: %s %s version %s (was %s, %d intra-op threads)", outcome, new.name,
            new.version, old.version if old else None, threads,
        )
        return True

    def retry_due(self) -> bool:
        """Whether a failed load is waiting for a retry whose time has come."""
        p = self.pending
        return p is not None and p.next_retry_at is not None and self._clock() >= p.next_retry_at

    def status(self) -> dict:
        """What the replica serves relative to what its URI points at (for health, metadata)."""
        p = self.pending
        state = "current" if p is None else "gave_up" if p.gave_up else "retrying"
        return {
            "state": state,
            "model_uri": p.uri if p else (self.current.uri if self.current else None),
            "pending_version": p.version if p else None,
            "attempts": p.attempts if p else 0,
            "last_load_error": p.reason if p else None,
            "next_retry_at": p.next_retry_at if p else None,
            "registry": dict(self.registry),
        }

    def _registry_answered(self, exc: BaseException | None) -> None:
        """Track whether the registry answers: a transient failure (refused connection,
        timeout, 5xx) marks it unreachable; an answer (even a refusal) reachable again."""
        kind = None if exc is None else failure_kind(exc)
        if kind == "unknown":
            return
        reachable = kind != "transient"
        if reachable and self.registry["reachable"] is True:
            return
        since = self.registry["since"]
        if self.registry["reachable"] is not reachable:
            since = self._clock()
        self.registry = {"reachable": reachable, "since": since, "last_error":
                         None if reachable else f"transient: {transient_cause(exc)}"}

    def _attempt_allowed(self, uri: str, version: str) -> bool:
        if (uri, version) in self._gave_up:
            return False
        p = self.pending
        if p is None or (p.uri, p.version) != (uri, version) or p.next_retry_at is None:
            return True
        return self._clock() >= p.next_retry_at

    def _record_failure(self, uri: str, version: str | None, exc: Exception) -> None:
        kind = failure_kind(exc)
        if self.current is not None:
            p = self.pending
            if p is None or (p.uri, p.version) != (uri, version):
                p = self.pending = PendingLoad(uri, version)
            p.attempts += 1
            p.reason = f"{kind}: {type(exc).__name__}"
            p.gave_up = version is not None and (
                kind == "permanent" or (kind == "unknown" and p.attempts >= MAX_UNKNOWN_ATTEMPTS)
            )
            if p.gave_up:
                self._gave_up.add((uri, version))  # type: ignore[arg-type]
                p.next_retry_at = None
            elif version is not None:  # an unresolved alias is simply tried at the next poll
                delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (p.attempts - 1))
                p.next_retry_at = self._clock() + delay
        self.last_error = {
            "model_uri": uri,
            "version": version,
            "reason": failure_reason(exc),
            "error": f"{type(exc).__name__}: {exc}",
            "at": time.time(),
            "kept_version": self.current.version if self.current else None,
        }
        name = self.current.name if self.current else uri
        self._on_load(name, version or "unknown", "failed")
        log.error(
            "raylane: could not load %s (version %s; %s); %s: %s", uri, version,
            self.status()["state"] if self.current else kind,
            "keeping version " + self.current.version if self.current else "no model to serve",
            exc,
        )
