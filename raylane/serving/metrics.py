"""The server's own Prometheus metrics, next to Ray Serve's (exported by each node's metrics agent).

- ``raylane_predictions_total{model_name, model_version, route}``: requests answered.
- ``raylane_predicted_rows_total{model_name, model_version}``: rows predicted.
- ``raylane_prediction_latency_ms{route}``: time in the handler, parse to response.
- ``raylane_rejected_requests_total{reason, route}``: 4xx answers by reason.
- ``raylane_model_loads_total{model_name, model_version, outcome}``: loads, swaps, failed swaps.
- ``raylane_model_version{model_name}``: the version being served.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000]


class ServingMetrics:
    """Metric objects for one replica; create inside the replica (not at import)."""

    def __init__(self) -> None:
        self.predictions = Counter(
            "raylane_predictions_total",
            description="Prediction requests answered, by model version and route.",
            tag_keys=("model_name", "model_version", "route"),
        )
        self.rows = Counter(
            "raylane_predicted_rows_total",
            description="Rows predicted, by model version.",
            tag_keys=("model_name", "model_version"),
        )
        self.latency = Histogram(
            "raylane_prediction_latency_ms",
            description="Prediction handler latency in milliseconds (parse, predict, encode).",
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("route",),
        )
        self.rejected = Counter(
            "raylane_rejected_requests_total",
            description="Requests answered with a 4xx, by reason.",
            tag_keys=("reason", "route"),
        )
        self.loads = Counter(
            "raylane_model_loads_total",
            description="Model loads by outcome: loaded, swapped, failed (old model kept).",
            tag_keys=("model_name", "model_version", "outcome"),
        )
        self.version = Gauge(
            "raylane_model_version",
            description="The registry version this replica serves.",
            tag_keys=("model_name",),
        )
        self._tags: dict[tuple[str, str, str], dict[str, str]] = {}

    def predicted(self, name: str, version: str, route: str, rows: int, ms: float) -> None:
        key = (name, version, route)
        tags = self._tags.get(key)
        if tags is None:
            tags = self._tags[key] = {"model_name": name, "model_version": version, "route": route}
        self.predictions.inc(1, tags)
        self.rows.inc(rows, {"model_name": name, "model_version": version})
        self.latency.observe(ms, {"route": route})

    def rejected_request(self, reason: str, route: str) -> None:
        self.rejected.inc(1, {"reason": reason, "route": route})

    def model_load(self, name: str, version: str, outcome: str) -> None:
        self.loads.inc(1, {"model_name": name, "model_version": version, "outcome": outcome})
        if outcome in ("loaded", "swapped") and version.isdigit():
            self.version.set(int(version), {"model_name": name})
