"""The model a replica serves: load from the registry, warm up, and swap safely.

A swap builds the new session and runs a warm-up prediction *before* it replaces the current
model (one attribute assignment, so in-flight requests finish on the model they started with).
If the new version fails to load or to warm up, the old one keeps serving and the failure is
recorded (log, metric, and ``last_error`` shown by the metadata route).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from mlflow import MlflowClient

from raylane.model_store import RegisteredModel, load_registered_model, resolve_version
from raylane.onnx_model import OnnxModel, Prediction
from raylane.schema import MISSING_CATEGORY, FeatureSchema

log = logging.getLogger("ray.serve")


class WarmupError(RuntimeError):
    """The model loaded but its warm-up prediction failed or produced unusable output."""


@dataclass
class LoadedModel:
    """A registered version with a ready ONNX Runtime session."""

    registered: RegisteredModel
    onnx: OnnxModel
    uri: str
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
    return LoadedModel(registered=registered, onnx=onnx, uri=uri)


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


class ModelHolder:
    """The current model of a replica, its load history and its swap policy.

    ``fetch`` downloads what a model URI points at and ``resolve`` names its version now (the
    MLflow registry by default); ``on_load(name, version, outcome)`` hears of every load.
    """

    def __init__(
        self, on_load: OnLoad | None = None, fetch: Fetch = load_registered_model,
        resolve: Resolve = registry_version,
    ) -> None:
        self.current: LoadedModel | None = None
        self.last_error: dict | None = None
        self._failed: set[tuple[str, str]] = set()  # (uri, version) known bad: not retried
        self._on_load = on_load or (lambda name, version, outcome: None)
        self._fetch = fetch
        self.resolve = resolve

    def ensure(self, uri: str, tracking_uri: str | None, threads: int = 1) -> bool:
        """Serve what ``uri`` points at. True when a (new) model was swapped in.

        Without a current model a failure raises (the replica must not become ready); with one,
        the failure is recorded and the current model stays.
        """
        version: str | None = None
        try:
            if self.current is not None:
                version = self.resolve(uri, tracking_uri)
                if self.current.uri == uri and self.current.version == version:
                    return False
                if (uri, version) in self._failed:
                    return False
            new = open_model(self._fetch(uri, tracking_uri), uri, threads)
        except Exception as exc:
            if self.current is None:
                self._record_failure(uri, None, exc)
                raise
            self._record_failure(uri, version, exc)
            return False
        outcome = "loaded" if self.current is None else "swapped"
        old = self.current
        self.current = new  # atomic for the event loop: later requests use the new model
        self.last_error = None
        self._on_load(new.name, new.version, outcome)
        log.info(
            "raylane: %s %s version %s (was %s)", outcome, new.name, new.version,
            old.version if old else None,
        )
        return True

    def _record_failure(self, uri: str, version: str | None, exc: Exception) -> None:
        if version is not None:
            self._failed.add((uri, version))
        self.last_error = {
            "model_uri": uri,
            "version": version,
            "error": f"{type(exc).__name__}: {exc}",
            "at": time.time(),
            "kept_version": self.current.version if self.current else None,
        }
        name = self.current.name if self.current else uri
        self._on_load(name, version or "unknown", "failed")
        log.error(
            "raylane: could not load %s (version %s); %s: %s", uri, version,
            "keeping version " + self.current.version if self.current else "no model to serve",
            exc,
        )
