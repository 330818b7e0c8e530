"""The holder of the model a replica serves: load from the registry, warm up, and swap safely.

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
from dataclasses import dataclass

from raylane.model.store import RegisteredModel, load_registered_model
from raylane.serving.load_failures import failure_kind, failure_reason, transient_cause
from raylane.serving.loaded_model import (
    LoadedModel,
    describe_timings,
    fetch_and_open,
    open_model,
    registry_version,
)

log = logging.getLogger("ray.serve")

Fetch = Callable[[str, str | None], RegisteredModel]
Resolve = Callable[[str, str | None], str]
OnLoad = Callable[[str, str, str], None]

RETRY_BASE_S = 10.0  # first retry of a failed load; doubles per failed attempt ...
RETRY_MAX_S = 300.0  # ... up to this
MAX_UNKNOWN_ATTEMPTS = 3  # an error of no known kind is given up once it failed this often

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
                    new = fetch_and_open(self._fetch, uri, tracking_uri, threads)
            else:
                new = fetch_and_open(self._fetch, uri, tracking_uri, threads)
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
            "raylane: %s %s version %s (was %s, %d intra-op threads) in %s", outcome, new.name,
            new.version, old.version if old else None, threads, describe_timings(new.timings),
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

