"""Metrics: the service over time from Prometheus (request rate, latency, errors, replicas, the
version served, load failures, prediction-log drops, nodes), the alert rules' own PromQL."""

from datetime import UTC, datetime, timedelta

import streamlit as st

from raylane.console import metrics, ui

config = ui.settings()
URL, TIMEOUT = config.prometheus_url, config.timeout_s
WINDOWS = {"15 minutes": 15, "1 hour": 60, "6 hours": 360, "24 hours": 1440}

st.title("Metrics")
st.caption(f"The service over time, from Prometheus (`{URL}`, set RAYLANE_PROMETHEUS_URL; "
           "`make observe` starts one for `make serve`'s cluster). Rates over 5 minutes, the "
           "same expressions the alert rules evaluate.")
left, right = st.columns([3, 1])
window = left.selectbox("Window", list(WINDOWS), index=1, key="metrics_window")
right.button("Refresh", icon=":material/refresh:", key="metrics_refresh")
end = datetime.now(UTC)
start = end - timedelta(minutes=WINDOWS[window])

frames = {}
for chart in metrics.charts():
    try:
        frames[chart.key] = metrics.chart_frame(URL, chart, start, end, TIMEOUT)
    except metrics.PrometheusDown as exc:
        ui.service_down("prometheus", URL, str(exc))
        st.stop()
    except metrics.QueryFailed as exc:
        frames[chart.key] = exc

now = {key: metrics.latest(f) for key, f in frames.items() if not isinstance(f, Exception)}
tiles = st.columns(4)
tiles[0].metric("Requests/s", f"{now.get('requests', {}).get('requests/s', 0):,.2f}")
for tile, q in zip(tiles[1:3], ("p50", "p99"), strict=True):
    value = now.get("latency", {}).get(q)
    tile.metric(f"Latency {q}", "-" if value is None else f"{value:,.1f} ms")
tiles[3].metric("Healthy replicas", f"{now.get('replicas', {}).get('replicas', 0):g}")

columns = st.columns(2)
for i, chart in enumerate(metrics.charts()):
    with columns[i % 2]:
        st.subheader(chart.title)
        if chart.help:
            st.caption(chart.help)
        frame = frames[chart.key]
        if isinstance(frame, Exception):
            st.warning(f"**{chart.title}**: Prometheus refused the query: {frame}")
        elif frame.empty:
            st.info(f"**{chart.title}**: no data in the last {window}.")
        else:
            st.altair_chart(metrics.line_chart(frame, chart.unit), width="stretch")
