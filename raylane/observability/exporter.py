"""Prometheus metrics about what lives in MLflow rather than in a process: when the drift monitor
last reported on each model (the alert RaylaneNoMonitoringReport).

    python -m raylane.observability.exporter --experiment credit-monitoring [--port 9464]

- ``raylane_monitoring_last_report_timestamp_seconds{model_name}``: end time (unix seconds) of
  the last FINISHED monitoring run on the model;
- ``raylane_monitoring_exporter_errors_total``: scrapes whose MLflow query failed (the
  timestamps are then the last ones read).

MLflow is read at most every ``--cache-s`` seconds whatever the scrape rate. Credentials: MLflow's
client's own (``~/.mlflow/credentials`` or the environment).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from raylane.model.tags import MONITOR_MODEL_NAME

# raylane.monitoring.recording's tag naming the model a monitoring run reports on
TAG_MODEL = MONITOR_MODEL_NAME


def last_reports(client, experiment: str, max_runs: int = 200) -> dict[str, float]:
    """{model name: end time in unix seconds} of the last finished monitoring run per model."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return {}
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
                              order_by=["attributes.end_time DESC"], max_results=max_runs)
    out: dict[str, float] = {}
    for run in runs:
        model = run.data.tags.get(TAG_MODEL)
        if model and run.info.end_time and model not in out:
            out[model] = run.info.end_time / 1000.0
    return out


class MonitoringCollector(Collector):
    """Reads MLflow on scrape, at most once per ``cache_s``."""

    def __init__(self, client, experiment: str, cache_s: float = 30.0) -> None:
        self.client, self.experiment, self.cache_s = client, experiment, cache_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._reports: dict[str, float] = {}
        self._errors = 0

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < self.cache_s:
                return
            self._read_at = time.monotonic()
            try:
                self._reports = last_reports(self.client, self.experiment)
            except Exception as exc:  # MLflow down: keep the last figures, count the failure
                self._errors += 1
                print(f"reading {self.experiment} failed: {exc}", file=sys.stderr, flush=True)

    def collect(self) -> Iterator:
        self._refresh()
        last = GaugeMetricFamily(
            "raylane_monitoring_last_report_timestamp_seconds",
            "End time of the last finished monitoring run on the model (unix seconds).",
            labels=["model_name"])
        for model, ts in sorted(self._reports.items()):
            last.add_metric([model], ts)
        yield last
        yield CounterMetricFamily("raylane_monitoring_exporter_errors",
                                  "Scrapes whose MLflow query failed.", value=self._errors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylane.observability.exporter",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True,
                        help="the monitoring experiment (`<mlflow.experiment>-monitoring`)")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9464)
    parser.add_argument("--cache-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    from mlflow import MlflowClient
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(MonitoringCollector(MlflowClient(args.tracking_uri), args.experiment,
                                          args.cache_s))
    start_http_server(args.port, addr=args.host, registry=registry)
    print(f"serving http://{args.host}:{args.port}/metrics", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
