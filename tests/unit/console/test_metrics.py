"""The Metrics view's logic without a Prometheus: Prometheus's query_range JSON (the format of its
HTTP API, tests/unit/console/data/prometheus_query_range.json) parsed into one frame per chart,
its errors told apart from "unreachable", and the page's message when nothing answers. The real
Prometheus is in tests/integration/observability/test_alerts_e2e.py."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from support.net import closed_port_url
from support.paths import ROOT

from raylane.console import metrics
from raylane.observability import promql

RESPONSES = json.loads((Path(__file__).parent / "data" / "prometheus_query_range.json").read_text())


def test_series_become_one_column_each_named_by_their_labels():
    four = metrics.Series(promql.errors_by_reason("4xx"), "4xx {reason}")
    five = metrics.Series(promql.errors_by_reason("5xx"), "5xx {reason}")
    frame = metrics.to_frame([(four, metrics.parse_response(RESPONSES["errors_4xx"])),
                              (five, metrics.parse_response(RESPONSES["errors_5xx"]))])
    assert list(frame.columns) == ["4xx unknown_column", "4xx bad_value"]
    assert str(frame.index.tz) == "UTC" and frame.index.is_monotonic_increasing
    assert frame.index[0] == datetime.fromtimestamp(1764895205, UTC)
    assert math.isnan(frame.loc[frame.index[0], "4xx bad_value"])  # no sample then
    assert metrics.latest(frame) == {"4xx unknown_column": 0.1, "4xx bad_value": 0.05}


def test_nan_and_infinite_quantiles_are_missing_values():
    p99 = metrics.Series(promql.latency_quantile_ms(0.99), "p99")
    frame = metrics.to_frame([(p99, metrics.parse_response(RESPONSES["latency_p99"]))])
    assert frame["p99"].isna().tolist() == [True, False, False]
    assert metrics.latest(frame) == {"p99": 48.75}
    frame = metrics.to_frame([(p99, metrics.parse_response(RESPONSES["quantile_no_traffic"]))])
    assert frame["p99"].isna().tolist() == [True, False]


def test_no_series_is_an_empty_frame_and_the_chart_of_a_frame_draws():
    assert metrics.to_frame([]).empty
    p99 = metrics.Series(promql.latency_quantile_ms(0.99), "p99")
    frame = metrics.to_frame([(p99, metrics.parse_response(RESPONSES["latency_p99"]))])
    spec = metrics.line_chart(frame, "ms").to_dict()
    assert spec["encoding"]["y"]["title"] == "ms"


def test_a_refused_query_says_why_and_is_not_unreachable():
    with pytest.raises(metrics.QueryFailed, match=r"bad_data: .*unclosed left parenthesis"):
        metrics.parse_response(RESPONSES["bad_query"], 400)
    with pytest.raises(metrics.QueryFailed, match="expected a matrix"):
        metrics.parse_response(RESPONSES["instant_vector"])
    with pytest.raises(metrics.PrometheusDown, match="not Prometheus's API"):
        metrics.parse_response({"apps": []})


def test_nothing_listening_is_prometheus_down():
    end = datetime.now(UTC)
    with pytest.raises(metrics.PrometheusDown, match="connection refused"):
        metrics.query_range(closed_port_url(), "up",
                            end - timedelta(minutes=5), end, 5, 2)


def test_legends_and_steps():
    assert metrics.legend_of("5xx {reason}", {"reason": "model_error"}) == "5xx model_error"
    assert metrics.legend_of("{instance}", {}) == "?"
    end = datetime.now(UTC)
    assert metrics.step_s(end - timedelta(minutes=15), end) == 5
    day = metrics.step_s(end - timedelta(hours=24), end)
    assert 24 * 3600 / day <= metrics.MAX_POINTS


def test_every_chart_uses_the_alert_rules_expressions_where_they_mean_the_same():
    queries = {c.key: [s.query for s in c.series] for c in metrics.charts()}
    assert queries["requests"] == [promql.request_rate()]
    assert promql.latency_quantile_ms(0.99) in queries["latency"]
    assert queries["replicas"] == [promql.healthy_replicas()]
    assert queries["log_drops"] == [promql.prediction_log_dropped()]
    assert set(queries["loads"]) == {promql.load_failed_attempts(), promql.load_gave_up()}


def test_the_page_says_prometheus_is_down_and_what_to_do(monkeypatch):
    monkeypatch.setenv("RAYLANE_PROMETHEUS_URL", closed_port_url())
    monkeypatch.setenv("RAYLANE_CONSOLE_TIMEOUT_S", "2")
    at = AppTest.from_file(str(ROOT / "console" / "pages" / "metrics.py"),
                           default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = " ".join(e.value for e in at.error)
    assert "Prometheus is not reachable" in errors and "connection refused" in errors
    assert "make observe" in errors and "RAYLANE_PROMETHEUS_URL" in errors
