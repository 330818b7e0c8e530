"""The Metrics view's data: Raylane's numbers over time from Prometheus's HTTP API
(``/api/v1/query_range``), as one wide frame per chart. The PromQL is
:mod:`raylane.observability.promql`'s, the same the alert rules use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import requests

from raylane.console.serving import _connection_reason
from raylane.observability import promql

MAX_POINTS = 240  # per series: enough for a chart, small for Prometheus (its limit is 11,000)


class PrometheusDown(Exception):
    """Prometheus did not answer (refused, timed out, not Prometheus)."""


class QueryFailed(Exception):
    """Prometheus answered with an error for a query (bad PromQL, too many points, timeout)."""


@dataclass(frozen=True)
class Series:
    """One PromQL expression of a chart; ``legend`` names each returned series: a format of its
    labels (``"4xx {reason}"``), or a plain name when the query returns one series."""

    query: str
    legend: str


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    series: tuple[Series, ...]
    help: str = ""


def charts(window: str = promql.WINDOW) -> tuple[Chart, ...]:
    """The Metrics view's charts; rates over ``window`` (the alerts use 5m)."""
    return (
        Chart("requests", "Request rate", "requests/s",
              (Series(promql.request_rate(window), "requests/s"),),
              "answered, rejected (4xx) and failed (5xx)"),
        Chart("latency", "Latency", "ms",
              (Series(promql.latency_quantile_ms(0.5, window), "p50"),
               Series(promql.latency_quantile_ms(0.99, window), "p99")),
              "the prediction handler (parse, predict, encode); the alert's SLO: p99 50 ms"),
        Chart("errors", "Errors by reason", "requests/s",
              (Series(promql.errors_by_reason("4xx", window), "4xx {reason}"),
               Series(promql.errors_by_reason("5xx", window), "5xx {reason}"))),
        Chart("replicas", "Healthy replicas", "replicas",
              (Series(promql.healthy_replicas(), "replicas"),)),
        Chart("version", "Model version served", "version",
              (Series(promql.served_version(), "{model_name}"),)),
        Chart("loads", "Model load failures", "count",
              (Series(promql.load_failed_attempts(), "failed attempts ({model_name})"),
               Series(promql.load_gave_up(), "gave up ({model_name})")),
              "attempts at the promoted version; gave up = 1 while it cannot load"),
        Chart("log_drops", "Prediction-log drops", "rows per 10 min",
              (Series(promql.prediction_log_dropped(), "dropped rows"),)),
        Chart("cpu", "Node CPU", "%", (Series(promql.node_cpu_percent(), "{instance}"),)),
        Chart("memory", "Node memory", "%",
              (Series(promql.node_memory_percent(), "{instance}"),)),
    )


def step_s(start: datetime, end: datetime, minimum_s: float = 5.0) -> float:
    """A resolution giving at most ``MAX_POINTS`` points over [start, end]."""
    return max(minimum_s, math.ceil((end - start).total_seconds() / MAX_POINTS))


def query_range(prometheus_url: str, query: str, start: datetime, end: datetime,
                step: float, timeout: float) -> list[dict]:
    """The ``matrix`` result of ``query`` over [start, end]: [{metric: {...}, values: [[t, v]]}].

    Raises PrometheusDown when nothing (or not Prometheus) answers, QueryFailed with
    Prometheus's own error when it refuses the query."""
    url = f"{prometheus_url.rstrip('/')}/api/v1/query_range"
    params = {"query": query, "start": start.timestamp(), "end": end.timestamp(),
              "step": f"{step:g}"}
    try:
        response = requests.get(url, params=params, timeout=timeout)
    except requests.Timeout:
        raise PrometheusDown(f"no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise PrometheusDown(_connection_reason(exc)) from None
    try:
        body = response.json()
    except ValueError:
        raise PrometheusDown(f"GET /api/v1/query_range answered {response.status_code} "
                             "without JSON (is this Prometheus?)") from None
    return parse_response(body, response.status_code)


def parse_response(body: object, status_code: int = 200) -> list[dict]:
    """The series of a ``query_range`` answer, or QueryFailed with Prometheus's reason."""
    if not isinstance(body, dict) or "status" not in body:
        raise PrometheusDown(f"answered {status_code} with JSON that is not Prometheus's API")
    if body["status"] != "success":
        raise QueryFailed(f"{body.get('errorType', 'error')}: {body.get('error', status_code)}")
    data = body.get("data") or {}
    if data.get("resultType") != "matrix":
        raise QueryFailed(f"expected a matrix (range query), got {data.get('resultType')!r}")
    return data.get("result") or []


def legend_of(legend: str, labels: dict[str, str]) -> str:
    """``legend`` with ``{label}`` filled from the series' labels (``?`` when absent)."""
    class Missing(dict):
        def __missing__(self, key: str) -> str:
            return "?"

    return legend.format_map(Missing(labels))


def to_frame(results: list[tuple[Series, list[dict]]]) -> pd.DataFrame:
    """One wide frame (UTC time index, a column per series) from each query's matrix result;
    Prometheus's "NaN" and "+Inf" (a quantile with no traffic) become missing values."""
    columns = {}
    for series, result in results:
        for item in result:
            name = legend_of(series.legend, item.get("metric", {}))
            values = item.get("values", [])
            index = pd.to_datetime([float(t) for t, _ in values], unit="s", utc=True)
            column = pd.Series([float(v) for _, v in values], index=index, dtype="float64")
            column = column.where(column.abs() != math.inf)
            columns[name] = column if name not in columns else columns[name].combine_first(column)
    if not columns:
        return pd.DataFrame(index=pd.DatetimeIndex([], tz=UTC, name="time"))
    frame = pd.DataFrame(columns).sort_index()
    frame.index.name = "time"
    return frame


def chart_frame(prometheus_url: str, chart: Chart, start: datetime, end: datetime,
                timeout: float) -> pd.DataFrame:
    """``chart``'s series over [start, end], one column each."""
    step = step_s(start, end)
    return to_frame([(s, query_range(prometheus_url, s.query, start, end, step, timeout))
                     for s in chart.series])


def latest(frame: pd.DataFrame) -> dict[str, float]:
    """Each series' last value that is not missing."""
    return {name: float(col.dropna().iloc[-1]) for name, col in frame.items()
            if not col.dropna().empty}


def line_chart(frame: pd.DataFrame, unit: str):
    """An Altair line chart of a wide frame: time on x, one colour per series."""
    import altair as alt

    long = frame.reset_index().melt("time", var_name="series", value_name="value").dropna()
    return alt.Chart(long).mark_line().encode(
        x=alt.X("time:T", title=None),
        y=alt.Y("value:Q", title=unit),
        color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom")),
        tooltip=["time:T", "series:N", alt.Tooltip("value:Q", format=",.3~f")],
    ).properties(height=220)
