"""raylane.observability.exporter on a real MLflow store (SQLite): the exposition text Prometheus
scrapes carries the end time of the last finished monitoring run per model, and keeps the last
figures (counting the failure) while MLflow cannot be read."""

from __future__ import annotations

import time

from mlflow import MlflowClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from raylane.observability.exporter import TAG_MODEL, MonitoringCollector


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple, float]]:
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_last_report_per_model_and_failures(tmp_path, monkeypatch):
    from raylane.monitoring.recording import TAG_MODEL as MONITORING_TAG

    assert TAG_MODEL == MONITORING_TAG  # the tag the monitor writes
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("credit-monitoring")
    ends = {}
    for model in ("credit", "credit", "other"):
        run = client.create_run(exp, tags={TAG_MODEL: model})
        client.set_terminated(run.info.run_id)
        ends[model] = client.get_run(run.info.run_id).info.end_time / 1000
        time.sleep(0.01)
    unfinished = client.create_run(exp, tags={TAG_MODEL: "credit"})  # still running: not a report
    assert unfinished.info.status == "RUNNING"
    registry = CollectorRegistry()
    collector = MonitoringCollector(client, "credit-monitoring", cache_s=0)
    registry.register(collector)
    got = scrape(registry)["raylane_monitoring_last_report_timestamp_seconds"]
    assert got == {(("model_name", "credit"),): ends["credit"],
                   (("model_name", "other"),): ends["other"]}
    # MLflow unreadable: the last figures stay, the failure is counted
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    collector.client = MlflowClient("http://127.0.0.1:1")  # nothing listens there
    after = scrape(registry)
    assert after["raylane_monitoring_last_report_timestamp_seconds"] == got
    assert after["raylane_monitoring_exporter_errors_total"][()] == 1.0
