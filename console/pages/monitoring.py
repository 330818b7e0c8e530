"""Monitoring: drift over time from the monitoring runs in MLflow, a column's distributions,
live metrics where labels arrived."""

from datetime import UTC, datetime, timedelta

import altair as alt
import streamlit as st

from raylane.console import monitoring as mon
from raylane.console import ui
from raylane.console.registry_access import (
    NotAllowed,
    NotFound,
    Unreachable,
    connect,
    mlflow_errors,
)
from raylane.console.versions import operator_name

config = ui.settings()
NAME, URI, TIMEOUT = config.registered_model, config.tracking_uri, config.timeout_s
USER = operator_name()
WINDOWS = {"7 days": 7, "30 days": 30, "90 days": 90, "1 year": 365}


@st.cache_data(ttl=60, show_spinner=False)
def runs(uri: str, name: str, limit: int, days: int, user: str):
    since = datetime.now(UTC) - timedelta(days=days)
    with mlflow_errors(TIMEOUT):
        return mon.recent_runs(connect(uri, TIMEOUT), name, limit, since)


@st.cache_data(ttl=600, show_spinner=False)
def artifact(uri: str, run_id: str, path: str, user: str):
    with mlflow_errors(TIMEOUT):
        client = connect(uri, TIMEOUT)
        if path.endswith(".json"):
            return mon.artifact_json(client, run_id, path)
        return mon.artifact_bytes(client, run_id, path)


st.title("Monitoring")
st.caption(f"Drift reports on **{NAME}** from the monitoring runs in MLflow (`{URI}`, "
           f"experiments `*{mon.SUFFIX}`), written by `python -m ray_jobs.monitor`.")
left, right = st.columns(2)
window = left.selectbox("Window", list(WINDOWS), index=1, key="monitoring_window")
limit = right.number_input("At most this many runs", 10, 1000, 200, step=50,
                           key="monitoring_limit")

try:
    found = runs(URI, NAME, int(limit), WINDOWS[window], USER)
except Unreachable as exc:
    ui.service_down("mlflow", URI, str(exc))
    st.stop()
except (NotFound, NotAllowed) as exc:
    st.warning(f"The monitoring runs could not be read: {exc}")
    st.stop()
if not found:
    st.info(f"No monitoring runs on **{NAME}** in the last {window}. Run the monitor "
            "(`python -m ray_jobs.monitor --config tune_configs/credit_xgboost.yaml "
            "--predictions <prediction log>`) or widen the window.")
    st.stop()

table = mon.runs_table(found)
latest = table.iloc[0]
top = st.columns(4)
top[0].metric("Latest decision", latest.decision)
top[1].metric("Drifted columns", str(latest["drifted columns"]).count(",") + 1
              if latest["drifted columns"] not in ("", "none") else 0)
top[2].metric("Rows in the last window", f"{int(latest.rows or 0):,}")
top[3].metric("Runs shown", f"{len(table):,}")

try:
    report = artifact(URI, latest.run_id, mon.REPORT, USER) or {}
    limits = mon.thresholds(report)
    for reason in report.get("reasons", []):
        st.markdown(f"- {reason}")

    st.subheader("Drift score per column over time")
    scores = mon.column_scores(found)
    if scores.empty:
        st.info("These runs had too few rows to score any column.")
    else:
        columns = sorted(scores.column.unique())
        flagged = sorted(scores[scores.drifted].column.unique())
        pick = st.multiselect("Columns", columns, default=flagged[:6] or columns[:6],
                              key="monitoring_columns")
        shown = scores[scores.column.isin(pick)]
        if not shown.empty:
            st.altair_chart(mon.scores_chart(shown, limits), width="stretch")
            if limits[limits.column.isin(pick)]["p-value"].any():
                st.caption("For p-value tests (ks, chisquare, z) a column drifts when its score "
                           "is at or below the threshold; for distances (wasserstein, "
                           "jensenshannon) at or above it.")

    st.subheader("Reference vs current")
    # Unique labels: two reports in the same minute must not look alike (and Streamlit keeps a
    # choice by its label).
    labels = {r.run_id: f"{r['window end']:%Y-%m-%d %H:%M:%S} UTC  v{r.version}  {r.decision}  "
                        f"drifted: {r['drifted columns'] or 'none'}  ({r.run_id[:8]})"
              for _, r in table.iterrows()}
    run_id = st.selectbox("Report", list(labels), format_func=labels.get,
                          key="monitoring_run")
    dists = artifact(URI, run_id, mon.DISTRIBUTIONS, USER)
    if dists:
        column = st.selectbox("Column", sorted(dists), key="monitoring_column")
        st.altair_chart(mon.distribution_chart(mon.distribution_frame(dists[column])),
                        width="stretch")
        chosen = (artifact(URI, run_id, mon.REPORT, USER) or {}).get("columns", {}).get(column)
        if chosen:
            st.caption(f"{chosen['method']} score {chosen['score']:.4g} (threshold "
                       f"{chosen['threshold']}): {'drifted' if chosen['drift'] else 'no drift'}")
    else:
        png = artifact(URI, run_id, mon.DRIFTED_PLOT, USER)
        if png:
            st.image(png, caption="The drifted columns' distributions (this run predates the "
                                  "per-column distributions)")
        else:
            st.info("This run logged no distributions (too few rows, or nothing drifted).")

    st.subheader("Live metrics (where labels arrived)")
    live = mon.live_metrics(found)
    if live.empty:
        st.info("No labels joined yet: pass `--labels` (prediction_id, label) to the monitor.")
    else:
        st.altair_chart(alt.Chart(live).mark_line(point=True).encode(
            x=alt.X("time:T", title="window end (UTC)"), y=alt.Y("value:Q", title=None),
            color="metric:N", tooltip=["metric", "value", "labelled rows"]),
            width="stretch")

    with st.expander("All runs"):
        st.dataframe(table, hide_index=True, width="stretch")
except Unreachable as exc:
    ui.service_down("mlflow", URI, str(exc))
