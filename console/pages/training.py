"""Training: recent tuning runs with their search progress; start a training job from a config
with overrides (Ray's Jobs API, or a RayJob on Kubernetes: RAYLANE_JOB_BACKEND) and follow it."""

from datetime import UTC, datetime

import streamlit as st

from raylane.config import ConfigError
from raylane.console import identity, job_backend, jobs, ui
from raylane.console.registry_access import (
    NotAllowed,
    NotFound,
    Unreachable,
    connect,
    mlflow_errors,
)
from raylane.console.versions import operator_name

config = ui.settings()
URI, TIMEOUT = config.tracking_uri, config.timeout_s
JOBS_AT = config.ray_address if config.job_backend == "ray" else "the Kubernetes API"
USER = operator_name()
WHO = identity.current()  # who submits: recorded with the job, never a typed name
STATUS = {"PENDING": ":gray-badge[pending]", "RUNNING": ":blue-badge[running]",
          "SUCCEEDED": ":green-badge[succeeded]", "FAILED": ":red-badge[failed]",
          "STOPPED": ":orange-badge[stopped]"}


@st.cache_data(ttl=30, show_spinner=False)
def tuning_runs(uri: str, user: str):
    with mlflow_errors(TIMEOUT):
        return jobs.tuning_runs(connect(uri, TIMEOUT))


@st.cache_data(ttl=600, show_spinner=False)
def search_plot(uri: str, run_id: str, user: str):
    with mlflow_errors(TIMEOUT):
        return jobs.search_plot(connect(uri, TIMEOUT), run_id)


st.title("Training")
try:
    BACKEND = job_backend.from_settings(config)
except jobs.RayUnreachable as exc:
    BACKEND = None
    BACKEND_ERROR = str(exc)
st.caption(f"Tuning runs in MLflow (`{URI}`) and training jobs: "
           f"{BACKEND.where if BACKEND else config.job_backend}.")

st.subheader("Recent tuning runs")
try:
    runs = tuning_runs(URI, USER)
    if not runs:
        st.info("No tuning runs yet: start a training job below, or run `make demo`.")
    else:
        table = jobs.runs_table(runs)
        st.dataframe(table.drop(columns=["run_id"]), hide_index=True, width="stretch",
                     column_config={
                         "started": st.column_config.DatetimeColumn(
                             "started (UTC)", format="YYYY-MM-DD HH:mm"),
                         "best valid": st.column_config.NumberColumn(format="%.4f")})
        names = {r.run_id: f"{r.run}  ({r.started:%Y-%m-%d %H:%M} UTC)"
                 for r in table.itertuples()}
        chosen = st.selectbox("Search progress of", list(names), format_func=names.get,
                              key="training_run")
        png = search_plot(URI, chosen, USER)
        if png:
            st.image(png, caption="Each trial's final validation score, and the best so far")
        else:
            st.caption("This run logged no search progress plot (stopped before the search "
                       "ended?).")
except Unreachable as exc:
    ui.service_down("mlflow", URI, str(exc))
except (NotFound, NotAllowed) as exc:
    st.warning(f"The tuning runs could not be read: {exc}")

st.subheader("Start a training job")
LIMITS = jobs.Limits.from_env()
found = jobs.configs(config.tune_configs)
if not found:
    st.warning(f"No configs in `{config.tune_configs}` (set RAYLANE_TUNE_CONFIGS).")
else:
    with st.form("training_submit"):
        path = st.selectbox("Config", found, format_func=lambda p: p.name, key="training_config")
        text = st.text_area(
            "Search settings (`key=value`, one per line)", key="training_overrides",
            placeholder="tune.num_samples=8\ntune.scheduler.type=fifo",
            help="Only the search may be changed here: " + ", ".join(jobs.editable_keys())
            + f". At most {LIMITS.max_samples} trials and a {LIMITS.max_time_budget_s:g} s "
            "search; data, MLflow and storage are the config's.")
        check, go = st.columns(2)
        validate = check.form_submit_button("Check config")
        submit = go.form_submit_button("Submit to Ray", type="primary",
                                       disabled=WHO.anonymous or BACKEND is None)
    identity.refuse_anonymous(WHO, "submit training jobs")
    if validate or (submit and not WHO.anonymous and BACKEND is not None):
        try:
            overrides = jobs.bounded(path, jobs.parse_overrides(text, path, LIMITS), LIMITS)
            checked = jobs.validate(path, overrides)
        except ConfigError as exc:
            st.error("The config is not valid; nothing was submitted.", icon=":material/error:")
            st.code(str(exc), language=None)
        else:
            deadline = jobs.deadline_s(path, overrides, LIMITS)
            st.caption(f"`{jobs.entrypoint(path, overrides, deadline=deadline)}`")
            if validate:
                st.success(f"Valid: {checked.model.family} on {checked.data.path}, "
                           f"{checked.tune.num_samples} trials, metric {checked.tune.metric}, "
                           f"stopped after {deadline:,} s.")
            else:
                try:
                    job_id = BACKEND.submit(path, overrides, str(WHO.name), LIMITS)
                except jobs.RayUnreachable as exc:
                    ui.service_down("ray", JOBS_AT, str(exc))
                except ConfigError as exc:
                    st.error(f"Nothing was submitted: {exc}", icon=":material/error:")
                else:
                    st.session_state["training_job"] = job_id
                    st.success(f"Submitted job `{job_id}`.", icon=":material/rocket_launch:")

st.subheader("Jobs on the cluster")
if BACKEND is None:
    ui.service_down("ray", JOBS_AT, BACKEND_ERROR)
    st.stop()
try:
    recent = BACKEND.recent()
except jobs.RayUnreachable as exc:
    ui.service_down("ray", JOBS_AT, str(exc))
    st.stop()
if recent.empty:
    st.info("No raylane jobs on this cluster yet.")
    st.stop()
ids = list(recent.job)
mine = st.session_state.get("training_job")
job_id = st.selectbox("Job", ids, index=ids.index(mine) if mine in ids else 0,
                      key="training_job_pick")
auto = st.toggle("Refresh every 3 s", value=False, key="training_auto")


@st.fragment(run_every=3 if auto else None)
def follow(job_id: str) -> None:
    """The job's status and the tail of its log."""
    try:
        state = BACKEND.state(job_id)
    except jobs.RayUnreachable as exc:
        ui.service_down("ray", JOBS_AT, str(exc))
        return
    took = ""
    if state.started:
        took = f" for {((state.ended or datetime.now(UTC)) - state.started).total_seconds():,.0f} s"
    st.markdown(f"**{job_id}** {STATUS.get(state.status, state.status)}{took}")
    if state.message:
        st.caption(state.message)
    st.code(state.log or "(no output yet)", language=None, height=400)
    st.button("Refresh", key="training_refresh")


follow(job_id)
with st.expander("Recent jobs"):
    st.dataframe(recent, hide_index=True, width="stretch")
