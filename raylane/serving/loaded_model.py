"""A registered version with a ready, warmed-up ONNX Runtime session: what a replica serves.

A model is opened and given a warm-up prediction *before* it may serve (a graph that loads but
cannot predict, or predicts garbage, is a :class:`WarmupError`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from mlflow import MlflowClient

from raylane.model.onnx_model import OnnxModel, Prediction
from raylane.model.schema import MISSING_CATEGORY, FeatureSchema
from raylane.model.store import RegisteredModel, load_registered_model, resolve_version


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
    # seconds per stage of this load: "fetch" (registry and artifacts; absent when reopened
    # from bytes already held), "session" (ONNX Runtime), "warmup"
    timings: dict[str, float] = field(default_factory=dict)

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
    started = time.perf_counter()
    onnx = OnnxModel(registered.onnx_bytes, registered.schema, intra_op_threads=intra_op_threads)
    opened = time.perf_counter()
    warm_up(onnx, registered.schema)
    timings = {"session": opened - started, "warmup": time.perf_counter() - opened}
    return LoadedModel(registered=registered, onnx=onnx, uri=uri, threads=intra_op_threads,
                       timings=timings)


def fetch_and_open(fetch: Callable[[str, str | None], RegisteredModel], uri: str,
                   tracking_uri: str | None, intra_op_threads: int = 1) -> LoadedModel:
    """``fetch`` the model ``uri`` names, then :func:`open_model` it; the fetch is timed too."""
    started = time.perf_counter()
    registered = fetch(uri, tracking_uri)
    fetched = time.perf_counter() - started
    model = open_model(registered, uri, intra_op_threads)
    model.timings = {"fetch": fetched, **model.timings}
    return model


def describe_timings(timings: dict[str, float]) -> str:
    """``0.84 s: fetch 0.61 s, session 0.20 s, warmup 0.03 s``."""
    stages = ", ".join(f"{stage} {seconds:.3f} s" for stage, seconds in timings.items())
    return f"{sum(timings.values()):.3f} s: {stages}"


def load_model(uri: str, tracking_uri: str | None, intra_op_threads: int = 1) -> LoadedModel:
    """Download, open and warm up a registered model; raise on any failure."""
    return fetch_and_open(load_registered_model, uri, tracking_uri, intra_op_threads)


def registry_version(uri: str, tracking_uri: str | None) -> str:
    """The version ``uri`` points at now in the registry (cheap: one registry call)."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    mv, _ = resolve_version(client, uri)
    return str(mv.version)

