"""The data plane every protocol shares: typed columns -> micro-batcher -> ONNX -> prediction.

Protocols decode their request bodies into :data:`~raylane.model.feeds.Feeds`, hand them to
:meth:`DataPlane.infer`, render the :class:`~raylane.model.onnx_model.Prediction` in their own
shape and report the answer with :meth:`DataPlane.answered` (telemetry and the sampled
prediction log).
"""

from __future__ import annotations

import re
import time

import numpy as np

from raylane.model.feeds import Feeds, RequestError
from raylane.model.onnx_model import Prediction
from raylane.model.schema import FeatureSchema
from raylane.serving.batcher import MicroBatcher
from raylane.serving.holder import ModelHolder
from raylane.serving.loaded_model import LoadedModel
from raylane.serving.prediction_log import PredictionLog
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry

BatchItem = tuple[LoadedModel, Feeds, int]


def class_labels(schema: FeatureSchema, pred: Prediction) -> list[str]:
    """The predicted class indices as the schema's class labels."""
    labels = schema.class_labels or []
    return [labels[i] for i in pred.labels.tolist()]


def not_ready() -> RequestError:
    return RequestError("no model loaded yet", status=503, reason="not_ready")


def predict_batch(items: list[BatchItem]) -> list[Prediction]:
    """Run queued small requests as one graph call per model (a swap may split a batch)."""
    if len(items) == 1:
        model, feeds, _ = items[0]
        return [model.predict(feeds)]
    results: list[Prediction | None] = [None] * len(items)
    groups: dict[int, list[int]] = {}
    for i, (model, _, _) in enumerate(items):
        groups.setdefault(id(model), []).append(i)
    for idx in groups.values():
        model = items[idx[0]][0]
        names = model.schema.feature_names
        feeds = {c: np.concatenate([items[i][1][c] for i in idx]) for c in names}
        pred = model.predict(feeds)
        start = 0
        for i in idx:
            end = start + items[i][2]
            results[i] = Prediction(
                labels=None if pred.labels is None else pred.labels[start:end],
                probabilities=None if pred.probabilities is None
                else pred.probabilities[start:end],
                values=None if pred.values is None else pred.values[start:end],
            )
            start = end
    return results  # type: ignore[return-value]


def log_prefix(model_uri: str) -> str:
    """The prediction log's default prefix: the model's name in ``models:/<name>@alias`` or
    ``models:/<name>/<version>``, spelled as a file name allows."""
    name = model_uri.removeprefix("models:/").split("@", 1)[0].split("/", 1)[0]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip("_.-")[:64] or "default"


class DataPlane:
    """One replica's model, settings, batcher, telemetry and prediction log."""

    def __init__(self, holder: ModelHolder, telemetry: ServingTelemetry) -> None:
        self.holder = holder
        self.telemetry = telemetry
        self.settings = ServingSettings()
        self.plog: PredictionLog | None = None
        self.batcher: MicroBatcher[BatchItem, Prediction] = MicroBatcher(predict_batch)

    def configure(self, settings: ServingSettings) -> PredictionLog | None:
        """Apply ``settings``; returns the previous prediction log (for the caller to flush)."""
        b = settings.batching
        self.batcher.set_max_batch_size(b.max_batch_size)
        self.batcher.set_batch_wait_timeout_s(b.batch_wait_timeout_s)
        old, self.plog = self.plog, None
        pl = settings.prediction_log
        if pl.enabled and pl.sample_rate > 0:
            self.plog = PredictionLog(
                directory=pl.directory, sample_rate=pl.sample_rate, flush_rows=pl.flush_rows,
                flush_interval_s=pl.flush_interval_s, max_total_bytes=pl.max_total_bytes,
                max_buffered_rows=pl.max_buffered_rows,
                prefix=pl.prefix or log_prefix(settings.model_uri), columns=pl.columns,
                max_row_bytes=pl.max_row_bytes,
                max_age_s=None if pl.max_age_days is None else pl.max_age_days * 86400,
            )
        self.settings = settings
        return old

    async def infer(self, model: LoadedModel, feeds: Feeds, n: int) -> Prediction:
        """Small requests through the micro-batcher, larger ones (a batch already) directly."""
        b = self.settings.batching
        if b.enabled and n <= b.max_rows_per_item:
            return await self.batcher.submit((model, feeds, n))
        return model.predict(feeds)

    def answered(
        self, model: LoadedModel, route: str, feeds: Feeds, n: int, pred: Prediction,
        started: float, ids: list[str] | None = None,
    ) -> None:
        """Count a successful prediction (latency since ``started``) and sample it to the log
        with its prediction ``ids`` (those the client got)."""
        self.telemetry.predicted(
            model.name, model.version, route, n, (time.perf_counter() - started) * 1000
        )
        if self.plog is not None:
            self.plog.record(model.name, model.version, model.schema, feeds, n, pred, ids)
