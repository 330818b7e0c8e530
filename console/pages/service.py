"""Service: health, the version that answers, replicas, traffic, latency and rejections."""

import time

import altair as alt
import pandas as pd
import streamlit as st

from raylane.console import ui
from raylane.console.service_status import (
    LATENCY,
    PREDICTIONS,
    REJECTED,
    SERVER_ERRORS,
    autoscaling_bounds,
    buckets,
    by_label,
    difference,
    metrics_urls,
    percentile,
    request_rate,
    scrape_metrics,
    serve_applications,
    serve_dashboard,
    total,
)
from raylane.console.serving import ServiceDown, fetch_health
from raylane.ray_auth import ray_token

config = ui.settings()
dashboard = serve_dashboard(config.ray_address)
st.title("Service")
st.caption("Is the model service healthy, what answers, how busy it is and how fast.")


@st.cache_data(ttl=5, show_spinner=False)
def health(url: str, timeout: float) -> dict:
    return fetch_health(url, timeout)


@st.cache_data(ttl=5, show_spinner=False)
def deployments(address: str, timeout: float):
    return serve_applications(address, timeout, ray_token())


@st.cache_data(ttl=60, show_spinner=False)
def scrape_targets(address: str, timeout: float) -> list[str]:
    return metrics_urls(address, timeout, ray_token())


# --- health and version
st.subheader("Health")
try:
    h = health(config.serve_url, config.timeout_s)
    up = h.get("status") == "ok"
    a, b, c = st.columns(3)
    a.metric("Status", "healthy" if up else str(h.get("status", "?")))
    b.metric("Version answering", f"{h.get('model_name') or '-'} v{h.get('model_version') or '-'}")
    pending = h.get("pending_version")
    c.metric("Load state", str(h.get("load_state") or "-"),
             help="current: the version the alias names is served; retrying: a newer one "
                  "failed to load and is retried; gave_up: it cannot load, the old one stays")
    if pending:
        st.warning(f"Version {pending} is pending (loading or retrying); "
                   f"v{h.get('model_version')} keeps answering.", icon=":material/hourglass:")
    if not up:
        st.warning("The service answers but has no model loaded yet (503).",
                   icon=":material/hourglass:")
except ServiceDown as exc:
    ui.service_down("serving", config.serve_url, exc.reason)

# --- replicas (Ray Serve REST API)
st.subheader("Replicas")
started = None
try:
    deps = deployments(dashboard, config.timeout_s)
    if not deps:
        st.info("Ray Serve runs no application.", icon=":material/info:")
    rows = [{"application": d.application, "app status": d.app_status,
             "deployment": d.deployment, "status": d.status, "target": d.target_replicas,
             **{f"{state.lower()}": n for state, n in sorted(d.replica_states.items())},
             "message": d.message} for d in deps]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    started = min((d.started_at for d in deps if d.started_at), default=None)
except ServiceDown as exc:
    ui.service_down("ray", dashboard, exc.reason)

# --- autoscaling bounds (the Serve config file)
st.subheader("Autoscaling")
try:
    bounds = autoscaling_bounds(config.serve_config)
    st.caption(f"From `{config.serve_config}`")
    st.dataframe(pd.DataFrame([b.__dict__ for b in bounds]), hide_index=True)
except (OSError, ValueError) as exc:
    st.warning(f"No Serve config at `{config.serve_config}` ({type(exc).__name__}); set "
               "RAYLANE_SERVE_CONFIG to the file the service was deployed from.",
               icon=":material/warning:")

# --- traffic, latency, rejections (the service's Prometheus metrics)
st.subheader("Traffic")
try:
    now = scrape_metrics(scrape_targets(dashboard, config.timeout_s), config.timeout_s)
except ServiceDown as exc:
    ui.service_down("ray", dashboard, f"metrics: {exc.reason}")
    st.stop()
previous = st.session_state.get("service_scrape")
st.session_state["service_scrape"] = now
requests_total = total(now, PREDICTIONS)
rate = request_rate(now, previous)
if rate is not None:
    rate_label, window = "Requests/s", f"over the last {now.at - previous.at:,.0f} s"
elif started is not None and now.at > started:
    rate, rate_label = requests_total / (now.at - started), "Requests/s"
    window = "average since the replicas started (refresh for the current rate)"
else:
    rate_label, window = "Requests/s", "refresh in a few seconds to measure"
cumulative = buckets(now, LATENCY)
latency = cumulative if previous is None else difference(cumulative, buckets(previous, LATENCY))
if not latency or latency[-1][1] <= 0:
    latency, latency_window = cumulative, "since the replicas started"
else:
    latency_window = "since the replicas started" if previous is None else window
a, b, c, d = st.columns(4)
a.metric(rate_label, "-" if rate is None else f"{rate:,.2f}", help=window)
b.metric("Requests answered", f"{requests_total:,.0f}", help="since the replicas started")
for column, q in ((c, 0.5), (d, 0.99)):
    value = percentile(latency, q)
    column.metric(f"p{round(q * 100)} latency", ui.milliseconds(None if value is None
                                                                 else value / 1000),
                  help=f"{latency_window}; from the histogram's buckets")
st.caption(f"Rate {window}. Latency: time in the handler, {latency_window}, interpolated in "
           "the histogram buckets of `raylane_prediction_latency_ms`. Figures reach Ray's "
           "metrics agent every few seconds.")

percentiles = pd.DataFrame([
    {"percentile": f"p{q}", "ms": percentile(latency, q / 100)} for q in (50, 90, 95, 99)])
if percentiles["ms"].notna().any():
    st.altair_chart(alt.Chart(percentiles.dropna()).mark_bar().encode(
        x=alt.X("ms:Q", title="latency (ms)"), y=alt.Y("percentile:N", title=None,
                                                      sort=None),
        tooltip=["percentile", alt.Tooltip("ms:Q", format=".1f")],
    ).properties(height=160), width="stretch")

st.subheader("Rejections")
rejected = {f"{k} (4xx)": v for k, v in by_label(now, REJECTED, "reason").items() if v}
rejected |= {f"{k} (5xx)": v for k, v in by_label(now, SERVER_ERRORS, "reason").items() if v}
if rejected:
    table = pd.DataFrame({"reason": list(rejected), "requests": list(rejected.values())})
    st.altair_chart(alt.Chart(table).mark_bar().encode(
        x=alt.X("requests:Q"), y=alt.Y("reason:N", sort="-x", title=None),
        tooltip=["reason", "requests"]), width="stretch")
else:
    st.success("No rejected requests since the replicas started.", icon=":material/check:")
st.caption(f"Scraped {time.strftime('%H:%M:%S', time.localtime(now.at))}.")
if st.button("Refresh", icon=":material/refresh:"):
    st.rerun()
