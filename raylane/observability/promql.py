"""Raylane's numbers in PromQL, one place for both readers: the alert rules
(:mod:`raylane.observability.alerts`, written to kuberay/observability/alerts.yaml) and the
console's Metrics view (:mod:`raylane.console.metrics`). Where an alert and a chart mean the same
number they call the same function here, so the two cannot drift apart.

Metric names as Prometheus sees them: Ray exports application metrics with the prefix ``ray_``
(raylane/serving/telemetry.py defines ``raylane_*``, scraped as ``ray_raylane_*``).
"""

from __future__ import annotations

DEPLOYMENT = "RaylaneModel"  # serve/config.yaml's deployment
WINDOW = "5m"

PREDICTIONS = "ray_raylane_predictions_total"
REJECTED = "ray_raylane_rejected_requests_total"
SERVER_ERRORS = "ray_raylane_server_errors_total"
LATENCY_BUCKET = "ray_raylane_prediction_latency_ms_bucket"
LOG_DROPPED = "ray_raylane_prediction_log_dropped_rows_total"


def _rate_or_zero(metric: str, window: str) -> str:
    # A counter that never moved has no series yet; `or vector(0)` keeps the sum defined.
    return f"sum(rate({metric}[{window}]) or vector(0))"


def request_rate(window: str = WINDOW) -> str:
    """Prediction requests per second: answered, rejected (4xx) and failed (5xx)."""
    return "\n  + ".join(_rate_or_zero(m, window)
                         for m in (PREDICTIONS, REJECTED, SERVER_ERRORS))


def server_error_ratio(window: str = WINDOW) -> str:
    """The share of requests answered 5xx (empty while there were none)."""
    return f"sum(rate({SERVER_ERRORS}[{window}]))\n/\n(\n  {request_rate(window)}\n)"


def latency_quantile_ms(quantile: float, window: str = WINDOW) -> str:
    """The prediction handler's latency quantile in ms (parse, predict, encode)."""
    return (f"histogram_quantile({quantile:g},\n"
            f"  sum by (le) (rate({LATENCY_BUCKET}[{window}])))")


def errors_by_reason(status: str, window: str = WINDOW) -> str:
    """Requests per second answered 4xx (``status="4xx"``) or 5xx, by reason."""
    metric = {"4xx": REJECTED, "5xx": SERVER_ERRORS}[status]
    return f"sum by (reason) (rate({metric}[{window}]))"


def healthy_replicas(deployment: str = DEPLOYMENT) -> str:
    """Healthy replicas of the model deployment (0 when Serve reports none)."""
    return f'sum(ray_serve_deployment_replica_healthy{{deployment="{deployment}"}}) or vector(0)'


def served_version() -> str:
    """The registry version the replicas serve, per model (max over replicas)."""
    return "max by (model_name) (ray_raylane_model_version)"


def registry_reachable() -> str:
    return "max by (model_name) (ray_raylane_registry_reachable)"


def load_gave_up() -> str:
    """1 while a replica gave up on the promoted version (it cannot load)."""
    return "max by (model_name) (ray_raylane_model_load_gave_up)"


def load_failed_attempts() -> str:
    """Failed attempts at loading the promoted version, still being retried."""
    return "max by (model_name) (ray_raylane_model_load_failed_attempts)"


def prediction_log_dropped(window: str = "10m") -> str:
    """Sampled prediction rows the prediction log dropped in ``window``."""
    return f"sum(increase({LOG_DROPPED}[{window}]))"


def node_cpu_percent() -> str:
    """CPU use of each Ray node, in percent (Ray's node metrics)."""
    return "avg by (instance) (ray_node_cpu_utilization)"


def node_memory_percent() -> str:
    """Memory use of each Ray node, in percent."""
    return ("100 * sum by (instance) (ray_node_mem_used)\n"
            "  / sum by (instance) (ray_node_mem_total)")
