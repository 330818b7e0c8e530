"""Predict: a form from the served model's /metadata; one answer with its class probabilities."""

import altair as alt
import streamlit as st

from raylane.console import ui
from raylane.console.serving import (
    Answer,
    ServiceDown,
    fetch_metadata,
    field_errors,
    form_fields,
    predict,
    record_from_form,
    reference_summary,
    training_categories,
    training_ranges,
)

config = ui.settings()
st.title("Predict")
st.caption("One row through the served model: fill in the inputs, get the answer.")


@st.cache_data(ttl=30, show_spinner=False)
def metadata(url: str, timeout: float):
    return fetch_metadata(url, timeout)


@st.cache_data(ttl=300, show_spinner=False)
def training_profile(tracking_uri: str, name: str, version: str) -> tuple[dict, dict]:
    summary = reference_summary(tracking_uri, name, version)
    return training_ranges(summary), training_categories(summary)


try:
    meta = metadata(config.serve_url, config.timeout_s)
except ServiceDown as exc:
    ui.service_down("serving", config.serve_url, exc.reason)
    st.stop()

ranges, categories = training_profile(config.tracking_uri, meta.name, meta.version)
fields = form_fields(meta, ranges, categories)
st.markdown(f"Model **{meta.name}** version **{meta.version}**"
            + (f" (`@{meta.alias}`)" if meta.alias else "")
            + f" · {meta.task} of `{meta.target}` · {len(fields)} inputs")
if not any(f.categories for f in fields if f.kind == "categorical"):
    st.info("The version's training categories could not be read (no reference profile in "
            "MLflow, or MLflow not reachable), so categorical inputs are free text. Setting "
            "`metadata_categories: 50` in the Serve `user_config` lists them in /metadata too.",
            icon=":material/info:")

errors = st.session_state.get("predict_errors", {})
left, right = st.columns([3, 2], gap="large")
with left, st.form("predict"):
    values = {}
    columns = st.columns(3)
    for i, f in enumerate(fields):
        with columns[i % 3]:
            label = f"{f.name}" + ("" if f.nullable else " *")
            key = f"field_{f.name}"
            if f.kind == "categorical" and f.categories:
                options = ([None] if f.nullable else []) + list(f.categories)
                values[f.name] = st.selectbox(
                    label, options, index=1 if f.nullable else 0, key=key, help=f.help or None,
                    format_func=lambda v: "(missing)" if v is None else str(v))
            elif f.kind == "categorical":
                values[f.name] = st.text_input(label, key=key, help=f.help or None,
                                               placeholder="(missing)" if f.nullable else "")
            else:
                step = 1 if f.integer else None
                default = f.default if f.default is not None else 0
                values[f.name] = st.number_input(
                    label, value=int(default) if f.integer else float(default), step=step,
                    key=key, help=f.help or None,
                    format=None if f.integer else "%g")
                if f.help:
                    st.caption(f.help)
                if f.nullable and st.checkbox("missing", key=f"missing_{f.name}"):
                    values[f.name] = None
            if f.name in errors:
                st.error(errors[f.name], icon=":material/error:")
    submitted = st.form_submit_button("Predict", type="primary", icon=":material/send:")
    st.caption("Inputs marked \\* are required (the model was trained without missing values "
               "there).")

if submitted:
    record = record_from_form(fields, values)
    try:
        result = predict(config.serve_url, [record], config.timeout_s)
    except ServiceDown as exc:
        ui.service_down("serving", config.serve_url, exc.reason)
        st.stop()
    if isinstance(result, Answer):
        st.session_state["predict_errors"] = {}
        st.session_state["predict_answer"] = result
    else:
        st.session_state["predict_answer"] = None
        st.session_state["predict_errors"] = field_errors(result, fields)
    st.rerun()

with right:
    answer = st.session_state.get("predict_answer")
    if "_form" in errors:
        st.error(f"The service refused the request: {errors['_form']}", icon=":material/error:")
    elif errors:
        st.error("The service refused the request: see the field marked in the form.",
                 icon=":material/error:")
    if answer is not None:
        st.subheader("Answer")
        a, b = st.columns(2)
        a.metric("Prediction", str(answer.predictions[0]))
        b.metric("Model version", answer.model_version)
        st.markdown(f"Prediction id `{answer.prediction_ids[0]}`")
        probs = answer.probability_frame()
        if probs is not None:
            chart = alt.Chart(probs).mark_bar().encode(
                x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), title="probability",
                        axis=alt.Axis(format="%")),
                y=alt.Y("class:N", sort="-x", title=None),
                color=alt.condition(alt.datum["class"] == str(answer.predictions[0]),
                                    alt.value("#1f77b4"), alt.value("#b0c4de")),
                tooltip=["class", alt.Tooltip("probability:Q", format=".1%")],
            )
            st.altair_chart(chart, width="stretch", height=36 * len(probs) + 50)
    elif not errors:
        st.info("Fill in the form and press **Predict**.", icon=":material/arrow_back:")
