"""Models: registered versions, decisions and checks, two side by side, promote, roll back."""

import pandas as pd
import streamlit as st

from raylane.console import identity, ui
from raylane.console import versions as reg
from raylane.console.registry_access import (
    NotAllowed,
    NotFound,
    Unreachable,
    connect,
    mlflow_errors,
)
from raylane.model.tags import (
    DIAGNOSIS,
    FAMILY,
    JUDGING_CHALLENGER,
    JUDGING_CHAMPION,
    JUDGING_CHAMPION_VERSION,
    JUDGING_METRIC,
    JUDGING_ROWS,
    PARITY_MAX_ABS_DIFF,
)

config = ui.settings()
NAME, URI, TIMEOUT = config.registered_model, config.tracking_uri, config.timeout_s
USER = reg.operator_name()  # part of every cache key: other credentials, other answers
WHO = identity.current()  # who promotes: recorded on the versions, never a typed name


def client():
    return connect(URI, TIMEOUT)


@st.cache_data(ttl=30, show_spinner=False)
def versions(uri: str, name: str, token: str | None, user: str):
    with mlflow_errors(TIMEOUT):
        return reg.versions_page(client(), name, token)


@st.cache_data(ttl=30, show_spinner=False)
def detail(uri: str, name: str, version: str, user: str) -> reg.VersionDetail:
    with mlflow_errors(TIMEOUT):
        return reg.version_detail(client(), name, version)


@st.cache_data(ttl=300, show_spinner=False)
def image(uri: str, run_id: str, user: str) -> bytes | None:
    with mlflow_errors(TIMEOUT):
        return reg.run_image(client(), run_id)


@st.cache_data(ttl=60, show_spinner=False)
def access(uri: str, name: str, user: str) -> tuple[bool, str]:
    with mlflow_errors(TIMEOUT):
        return reg.write_access(client(), name)


st.title("Models")
st.caption(f"Versions of **{NAME}** in the MLflow registry `{URI}`: what the training job decided "
           "about each, and who moved `champion` since.")

if flash := st.session_state.pop("models_flash", None):
    st.success(flash, icon=":material/check_circle:")
tokens = st.session_state.setdefault("models_pages", [None])
try:
    pages = [versions(URI, NAME, t, USER) for t in tokens]
except Unreachable as exc:
    ui.service_down("mlflow", URI, str(exc))
    st.stop()
except (NotFound, NotAllowed) as exc:
    st.info(f"No versions of **{NAME}** to show: {exc}. Train one with `make demo`.")
    st.stop()
table = pd.concat([p[0] for p in pages], ignore_index=True)
next_token = pages[-1][1]
if table.empty:
    st.info(f"No versions of **{NAME}** are registered yet. Train one with `make demo`.")
    st.stop()

by_alias = {a.strip(): str(r.version) for r in table.itertuples()
            for a in r.aliases.split(",") if a.strip()}
champion = by_alias.get(reg.CHAMPION)
top = st.columns(4)
top[0].metric("Champion", f"v{champion}" if champion else "none")
challenger = by_alias.get(reg.CHALLENGER)
top[1].metric("Challenger", f"v{challenger}" if challenger else "none")
top[2].metric("Versions shown", f"{len(table):,}")
latest = table.iloc[0]
top[3].metric("Newest", f"v{latest.version}",
              help=f"registered {latest.registered:%Y-%m-%d %H:%M} UTC")

st.dataframe(
    table.drop(columns=["run_id"]), hide_index=True, width="stretch",
    column_config={
        "version": st.column_config.NumberColumn("version", format="v%d"),
        "registered": st.column_config.DatetimeColumn("registered (UTC)",
                                                      format="YYYY-MM-DD HH:mm"),
        "score": st.column_config.NumberColumn("judged score", format="%.4f"),
        "champion score": st.column_config.NumberColumn(format="%.4f"),
        "parity max |diff|": st.column_config.NumberColumn(format="%.2e"),
        "reasons": st.column_config.TextColumn(width="large"),
    })
if next_token and st.button(f"Load {reg.PAGE_SIZE} older versions", key="models_more"):
    tokens.append(next_token)
    st.rerun()

choices = [str(v) for v in table.version]


def show(d: reg.VersionDetail) -> None:
    """One version: decision, checks, the run that produced it, holdout metrics."""
    verdict = {"promoted": ":green-badge[promoted]",
               "not promoted": ":orange-badge[not promoted]",
               "failed": ":red-badge[decision failed]"}.get(d.decision,
                                                            f":gray-badge[{d.decision}]")
    aliases = " ".join(f":blue-badge[{a}]" for a in d.aliases)
    st.markdown(f"#### v{d.version} {aliases} {verdict}")
    for reason in d.reasons:
        st.markdown(f"- {reason}")
    checks = st.columns(3)
    checks[0].metric("Gates", d.gates)
    checks[1].metric("ONNX parity", d.parity,
                     help=f"max |ONNX - native| {d.tags.get(PARITY_MAX_ABS_DIFF, '-')}")
    judged = d.tags.get(JUDGING_CHALLENGER)
    checks[2].metric(f"Judged {d.tags.get(JUDGING_METRIC, '')}".strip(),
                     judged or "-",
                     help=f"champion then: v{d.tags.get(JUDGING_CHAMPION_VERSION, '-')}"
                          f" {d.tags.get(JUDGING_CHAMPION, '')}; rows "
                          f"{d.tags.get(JUDGING_ROWS, '-')}")
    if d.run_missing:
        st.warning(f"The run {d.run_id} could not be read: {d.run_missing}")
    else:
        link = reg.run_link(URI, d)
        run = f"[{d.run_name or d.run_id}]({link})" if link else f"`{d.run_name or d.run_id}`"
        st.markdown(f"Produced by run {run} (`{d.run_id}`), family "
                    f"{d.tags.get(FAMILY, '-')}, diagnosis "
                    f"{d.run_tags.get(DIAGNOSIS, '-')}.")
    holdout = d.holdout_metrics()
    if holdout:
        st.dataframe({"holdout metric": list(holdout), "value": list(holdout.values())},
                     hide_index=True)
    best = {k.removeprefix("best."): v for k, v in d.params.items() if k.startswith("best.")}
    if best:
        st.caption("Best trial's parameters: " + ", ".join(f"{k}={v}" for k, v in best.items()))
    who = d.tags.get(reg.PROMOTED_BY)
    if who:
        st.caption(f"Made champion by **{who}** at {d.tags.get(reg.PROMOTED_AT)}: "
                   f"{d.tags.get(reg.PROMOTED_WHY)}")
    if d.tags.get(reg.DEMOTED_BY):
        st.caption(f"Replaced by v{d.tags.get(reg.DEMOTED_FOR)} by **{d.tags[reg.DEMOTED_BY]}** "
                   f"at {d.tags.get(reg.DEMOTED_AT)}: {d.tags.get(reg.DEMOTED_WHY)}")


try:
    tab_one, tab_two, tab_promote = st.tabs(["Version", "Compare two", "Promote / roll back"])
    with tab_one:
        pick = st.selectbox("Version", choices, key="models_version",
                            index=choices.index(champion) if champion in choices else 0,
                            format_func=lambda v: f"v{v}")
        show(detail(URI, NAME, pick, USER))

    with tab_two:
        left, right = st.columns(2)
        a = left.selectbox("Version A", choices, key="models_a",
                           index=choices.index(champion) if champion in choices else 0,
                           format_func=lambda v: f"v{v}")
        b = right.selectbox("Version B", choices, key="models_b", index=0,
                            format_func=lambda v: f"v{v}")
        da, db = detail(URI, NAME, a, USER), detail(URI, NAME, b, USER)
        metrics, params = reg.compare(da, db)
        st.markdown("##### Metrics")
        st.dataframe(metrics, hide_index=True, width="stretch")
        st.markdown("##### Parameters")
        st.dataframe(params, hide_index=True, width="stretch")
        st.markdown("##### Feature importance (permutation, holdout)")
        for col, d in ((left, da), (right, db)):
            png = image(URI, d.run_id, USER) if d.run_id and not d.run_missing else None
            if png:
                col.image(png, caption=f"v{d.version}")
            else:
                col.caption(f"v{d.version}: its run logged no feature importance plot.")

    with tab_promote:
        writable, why_not = access(URI, NAME, USER)
        if identity.refuse_anonymous(WHO, "promote or roll back"):
            writable = False
        if not writable:
            st.warning(f"**Read-only.** {why_not}. Promoting needs MLflow credentials that may "
                       "write the registry (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
                       "of the trainer account).", icon=":material/lock:")
        champ = detail(URI, NAME, champion, USER) if champion else None
        back = reg.rollback_target(champ) if champ else None
        others = [v for v in choices if v != champion]
        if not others:
            st.info("Only one version: nothing to promote or roll back to.")
        else:
            default = others.index(back) if back in others else 0
            with st.form("models_promote"):
                target = st.selectbox(
                    "Make champion", others, index=default, key="models_target",
                    format_func=lambda v: f"v{v}" + (" (roll back: the previous champion)"
                                                     if v == back else ""),
                    disabled=not writable)
                if writable:
                    st.caption(f"Recorded as **{WHO.name}** ({WHO.mode}).")
                why = st.text_area("Why", key="models_why", disabled=not writable,
                                   placeholder="e.g. v7 misprices new customers; back to v6")
                sure = st.checkbox(f"Move `champion` from v{champion or '-'} to the version "
                                   "above; serving swaps to it within its poll interval",
                                   key="models_confirm", disabled=not writable)
                go = st.form_submit_button("Move champion", type="primary",
                                           disabled=not writable)
            if go and not WHO.anonymous:
                if not sure:
                    st.error("Tick the confirmation first.")
                else:
                    action = "rollback" if champion and int(target) < int(champion) else "promote"
                    try:
                        with mlflow_errors(TIMEOUT):
                            prev = reg.promote(client(), NAME, target, str(WHO.name), why,
                                              action=action)
                    except (reg.Refused, NotAllowed, NotFound) as exc:
                        st.error(f"Refused: {exc}", icon=":material/block:")
                    else:
                        st.cache_data.clear()
                        st.session_state["models_flash"] = (
                            f"v{target} is champion (was v{prev or '-'}); who and why are "
                            "recorded on both versions.")
                        st.rerun()
except Unreachable as exc:
    ui.service_down("mlflow", URI, str(exc))
