"""The server's own Prometheus metrics, next to Ray Serve's (exported by each node's metrics agent).

Aggregated in the replica and recorded every half second (:meth:`ServingTelemetry.flush_async`).

- ``raylane_predictions_total{model_name, model_version, route}``: requests answered.
- ``raylane_predicted_rows_total{model_name, model_version}``: rows predicted.
- ``raylane_prediction_latency_ms{route}``: time in the handler, parse to response.
- ``raylane_rejected_requests_total{reason, route}``: 4xx answers by reason.
- ``raylane_server_errors_total{reason, route}``: 5xx answers (faults of the model or server).
- ``raylane_model_loads_total{model_name, model_version, outcome}``: loads, swaps, failed swaps.
- ``raylane_model_version{model_name}``: the version being served.
- ``raylane_model_load_failed_attempts{model_name}``: failed attempts at loading the version the
  model URI points at (0: it is served); ``raylane_model_load_gave_up{model_name}``: 1 when
  that version is given up (it cannot load; only a new version or a restart changes that).
- ``raylane_registry_reachable{model_name}``: 1 while the model registry answers the replica's
  polls, 0 after a transient failure (refused connection, timeout, 5xx) until it answers again.
- ``raylane_housekeeping_errors_total{step}``: failures of the replica's background steps
  (telemetry, prediction_log, load_status, registry_poll; restart: the task had ended).
- ``raylane_prediction_log_dropped_rows_total``: sampled rows the prediction log could not keep
  (its buffer was full while a write ran, or a write failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from ray.serve.metrics import Counter, Gauge, Histogram

MAX_PENDING_LATENCIES = 100_000
OBSERVATIONS_PER_CHUNK = 50
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000]


class ServingTelemetry:
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
        self.log_dropped = Counter(
            "raylane_prediction_log_dropped_rows_total",
            description="Sampled prediction rows the prediction log dropped (full buffer, failed "
            "write).",
        )
        self._log_dropped = 0
        self.server_errors = Counter(
            "raylane_server_errors_total",
            description="Requests answered with a 5xx (a fault of the model or the server), "
            "by reason.",
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
        self.load_failed_attempts = Gauge(
            "raylane_model_load_failed_attempts",
            description="Failed attempts at loading the version the model URI points at "
            "(0: that version is served).",
            tag_keys=("model_name",),
        )
        self.load_gave_up = Gauge(
            "raylane_model_load_gave_up",
            description="1 when the version the model URI points at cannot load and is not "
            "retried (the replica serves an older one).",
            tag_keys=("model_name",),
        )
        self.registry_reachable = Gauge(
            "raylane_registry_reachable",
            description="1 while the model registry answers this replica's polls, 0 while it "
            "is unreachable (the served model stays).",
            tag_keys=("model_name",),
        )
        self.housekeeping_errors = Counter(
            "raylane_housekeeping_errors_total",
            description="Failures of a replica's background steps (it carries on).",
            tag_keys=("step",),
        )
        # Per-request figures are aggregated here and handed to Ray by flush_async() (the
        # replica calls it twice a second), as Ray Serve does for its own request metrics: a
        # Ray metric call costs microseconds, several per request add up at thousands of req/s.
        self._counts: dict[tuple[str, str, str], list[int]] = {}  # -> [requests, rows]
        self._latencies: dict[str, list[float]] = {}
        self._rejected: dict[tuple[str, str], int] = {}
        self._server_errors: dict[tuple[str, str], int] = {}

    def predicted(self, name: str, version: str, route: str, rows: int, ms: float) -> None:
        counts = self._counts.get((name, version, route))
        if counts is None:
            counts = self._counts[(name, version, route)] = [0, 0]
        counts[0] += 1
        counts[1] += rows
        latencies = self._latencies.get(route)
        if latencies is None:
            latencies = self._latencies[route] = []
        if len(latencies) < MAX_PENDING_LATENCIES:  # bounded if flush() stopped being called
            latencies.append(ms)

    def rejected_request(self, reason: str, route: str) -> None:
        key = (reason, route)
        self._rejected[key] = self._rejected.get(key, 0) + 1

    def server_error(self, reason: str, route: str) -> None:
        key = (reason, route)
        self._server_errors[key] = self._server_errors.get(key, 0) + 1

    def flush(self) -> None:
        """Record what was aggregated since the last flush in Ray's metrics."""
        for _ in self._record():
            pass

    async def flush_async(self) -> None:
        """:meth:`flush`, yielding to the event loop between chunks of latency observations,
        so that recording a half second of requests never holds up the requests in flight."""
        for _ in self._record():
            await asyncio.sleep(0)

    def _record(self) -> Iterator[None]:
        counts, self._counts = self._counts, {}
        latencies, self._latencies = self._latencies, {}
        rejected, self._rejected = self._rejected, {}
        server_errors, self._server_errors = self._server_errors, {}
        rows: dict[tuple[str, str], int] = {}
        for (name, version, route), (requests, n) in counts.items():
            self.predictions.inc(
                requests, {"model_name": name, "model_version": version, "route": route}
            )
            rows[(name, version)] = rows.get((name, version), 0) + n
        for (name, version), n in rows.items():
            self.rows.inc(n, {"model_name": name, "model_version": version})
        for (reason, route), n in rejected.items():
            self.rejected.inc(n, {"reason": reason, "route": route})
        for (reason, route), n in server_errors.items():
            self.server_errors.inc(n, {"reason": reason, "route": route})
        for route, values in latencies.items():
            tags = {"route": route}
            # Ray's histogram takes one value per call: ~1,000 per flush at 2,000 req/s
            for start in range(0, len(values), OBSERVATIONS_PER_CHUNK):
                for ms in values[start:start + OBSERVATIONS_PER_CHUNK]:
                    self.latency.observe(ms, tags)
                yield

    def model_load(self, name: str, version: str, outcome: str) -> None:
        self.loads.inc(1, {"model_name": name, "model_version": version, "outcome": outcome})
        if outcome in ("loaded", "swapped") and version.isdigit():
            self.version.set(int(version), {"model_name": name})

    def load_status(self, name: str, status: dict) -> None:
        """Record :meth:`ModelHolder.status` (called when it changes)."""
        tags = {"model_name": name}
        self.load_failed_attempts.set(status["attempts"], tags)
        self.load_gave_up.set(1 if status["state"] == "gave_up" else 0, tags)
        reachable = (status.get("registry") or {}).get("reachable")
        if reachable is not None:
            self.registry_reachable.set(1 if reachable else 0, tags)

    def housekeeping_failed(self, step: str) -> None:
        self.housekeeping_errors.inc(1, {"step": step})

    def prediction_log_dropped(self, total: int) -> None:
        """Record the log's running count of dropped rows (only its increase is added)."""
        if total > self._log_dropped:
            self.log_dropped.inc(total - self._log_dropped)
            self._log_dropped = total
