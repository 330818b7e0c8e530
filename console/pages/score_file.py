"""Score a file: upload CSV or Parquet, score it through the service in batches, download it."""

import altair as alt
import streamlit as st

from raylane.console import ui
from raylane.console.scoring import (
    MAX_UPLOAD_MB,
    UnreadableFile,
    missing_columns,
    read_table,
    score,
    service_sender,
    summary,
    to_download,
)
from raylane.console.serving import ServiceDown, fetch_metadata

config = ui.settings()
st.title("Score a file")
st.caption("Every row of a CSV or Parquet file through the served model, in batches. Rows the "
           "service rejects are listed with its reason; the others are scored.")


@st.cache_data(ttl=30, show_spinner=False)
def metadata(url: str, timeout: float):
    return fetch_metadata(url, timeout)


try:
    meta = metadata(config.serve_url, config.timeout_s)
except ServiceDown as exc:
    ui.service_down("serving", config.serve_url, exc.reason)
    st.stop()

st.markdown(f"Model **{meta.name}** version **{meta.version}** · columns: "
            + ", ".join(f"`{c['name']}`" for c in meta.inputs))
upload = st.file_uploader("A table with the model's columns (others are kept as they are)",
                          type=["csv", "parquet"], max_upload_size=MAX_UPLOAD_MB)
batch_rows = st.select_slider("Rows per request", options=[16, 64, 256, 1000], value=256)

if upload is None:
    st.stop()
try:
    frame = read_table(upload.name, upload.getvalue())
except UnreadableFile as exc:
    st.error(str(exc), icon=":material/error:")
    st.stop()
missing = missing_columns(frame, meta)
if missing:
    st.error(f"The file has no column(s) {', '.join(missing)}: the model needs every one of "
             f"its columns.", icon=":material/error:")
    st.stop()
st.write(f"**{len(frame):,} rows**, {len(frame.columns)} columns")

key = (upload.file_id, batch_rows, meta.version)
if st.session_state.get("scored_key") != key:
    if not st.button("Score", type="primary", icon=":material/play_arrow:"):
        st.stop()
    bar = st.progress(0.0, text="Scoring ...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total, text=f"Scored {done:,} of {total:,} rows")

    try:
        result = score(frame, meta, service_sender(config.serve_url, config.timeout_s),
                       batch_rows, progress)
    except ServiceDown as exc:
        ui.service_down("serving", config.serve_url, exc.reason)
        st.stop()
    bar.empty()
    st.session_state["scored_key"], st.session_state["scored"] = key, result
result = st.session_state["scored"]

a, b, c, d = st.columns(4)
a.metric("Rows scored", f"{len(result.frame):,}")
b.metric("Rows rejected", f"{len(result.rejected):,}")
c.metric("Requests", f"{result.requests:,}")
d.metric("Model version", ", ".join(sorted(result.versions)) or "-")

table = summary(result, meta.task)
if meta.task == "classification":
    st.subheader("Predicted classes")
    chart = alt.Chart(table).mark_bar().encode(
        x=alt.X("rows:Q", title="rows"), y=alt.Y("class:N", sort="-x", title=None),
        tooltip=["class", "rows", alt.Tooltip("share:Q", format=".1%")])
else:
    st.subheader("Predicted values")
    chart = alt.Chart(table).mark_bar().encode(
        x=alt.X("low:Q", bin="binned", title="prediction"), x2="high:Q",
        y=alt.Y("rows:Q", title="rows"), tooltip=["low", "high", "rows"])
st.altair_chart(chart, width="stretch")

data, name, mime = to_download(result.frame, upload.name)
st.download_button(f"Download {name}", data, file_name=name, mime=mime, type="primary",
                   icon=":material/download:")
st.dataframe(result.frame.head(200), hide_index=True)
if len(result.rejected):
    st.subheader("Rejected rows")
    st.caption("Row numbers count from 0, the first data row of the file.")
    st.dataframe(result.rejected, hide_index=True)
