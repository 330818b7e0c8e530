"""The Monitoring page's data: the monitoring runs in MLflow (raylane/monitoring/recording.py) as
drift scores over time, one run's report, a column's reference vs current distribution, and the
live metrics of the runs where labels arrived. Queries are bounded: the newest N runs since a date.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import altair as alt
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

from raylane.console.registry_access import NotFound, translate
from raylane.model.tags import MONITOR_DRIFTED_COLUMNS
from raylane.monitoring.recording import TAG_DECISION, TAG_MODEL, TAG_UNTIL, TAG_VERSION
from raylane.monitoring.stattests import P_VALUE_METHODS, STATTESTS

SUFFIX = "-monitoring"
REPORT, DISTRIBUTIONS = "monitoring/report.json", "monitoring/distributions.json"
DRIFTED_PLOT = "plots/drifted_distributions.png"


def monitoring_experiments(client: MlflowClient) -> list[str]:
    """Ids of the experiments named ``<experiment>-monitoring`` (at most 50)."""
    found = client.search_experiments(filter_string=f"name LIKE '%{SUFFIX}'", max_results=50)
    return [e.experiment_id for e in found]


def recent_runs(client: MlflowClient, model: str, limit: int = 200,
                since: datetime | None = None) -> list[Run]:
    """The newest ``limit`` monitoring runs on ``model`` started at or after ``since``."""
    ids = monitoring_experiments(client)
    if not ids:
        return []
    query = f"tags.`{TAG_MODEL}` = '{model}'"
    if since is not None:
        query += f" and attributes.start_time >= {int(since.timestamp() * 1000)}"
    return list(client.search_runs(ids, query, order_by=["attributes.start_time DESC"],
                                   max_results=limit))


def window_end(run: Run) -> datetime:
    """The end of the window the run judged (its metrics' step), else when it started."""
    until = run.data.tags.get(TAG_UNTIL)
    if until:
        end = datetime.fromisoformat(until)
        return end if end.tzinfo else end.replace(tzinfo=UTC)
    return datetime.fromtimestamp(run.info.start_time / 1000, UTC)


def runs_table(runs: list[Run]) -> pd.DataFrame:
    """One row per run, newest window first."""
    rows = []
    for run in runs:
        m, t = run.data.metrics, run.data.tags
        rows.append({
            "window end": window_end(run), "version": t.get(TAG_VERSION, "-"),
            "decision": t.get(TAG_DECISION, "-"), "rows": m.get("rows"),
            "drift share": m.get("drift_share"), "dataset drift": bool(m.get("dataset_drift")),
            "drifted columns": t.get(MONITOR_DRIFTED_COLUMNS, ""),
            "labelled rows": m.get("labelled_rows"), "run_id": run.info.run_id})
    columns = ["window end", "version", "decision", "rows", "drift share", "dataset drift",
               "drifted columns", "labelled rows", "run_id"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("window end", ascending=False, ignore_index=True)


def column_scores(runs: list[Run]) -> pd.DataFrame:
    """Long table of each column's drift score per run: time, column, score, drifted."""
    rows = []
    for run in runs:
        end = window_end(run)
        for key, value in run.data.metrics.items():
            if key.startswith("drift.") and key.endswith(".score"):
                column = key.removeprefix("drift.").removesuffix(".score")
                drifted = run.data.metrics.get(f"drift.{column}.drifted", 0.0) > 0
                rows.append({"time": end, "column": column, "score": value, "drifted": drifted})
    return pd.DataFrame(rows, columns=["time", "column", "score", "drifted"])


def live_metrics(runs: list[Run]) -> pd.DataFrame:
    """Long table of live metrics (``live.*``) of the runs where labels arrived."""
    rows = [{"time": window_end(run), "metric": key.removeprefix("live."), "value": value,
             "labelled rows": run.data.metrics.get("labelled_rows")}
            for run in runs if run.data.metrics.get("labelled_rows")
            for key, value in run.data.metrics.items() if key.startswith("live.")]
    return pd.DataFrame(rows, columns=["time", "metric", "value", "labelled rows"])


def comparison_note() -> str:
    """How a score compares with its threshold, per kind of drift method."""
    distances = [name for name, test in STATTESTS.items() if not test.p_value]
    return (f"For p-value tests ({', '.join(sorted(P_VALUE_METHODS))}) a column drifts when its "
            f"score is at or below the threshold; for distances ({', '.join(distances)}) at or "
            "above it.")


def thresholds(report: dict) -> pd.DataFrame:
    """Per column of a report: method and threshold (and whether drift is below it)."""
    rows = [{"column": name, "method": col.get("method"), "threshold": col.get("threshold"),
             "p-value": col.get("method") in P_VALUE_METHODS}
            for name, col in (report.get("columns") or {}).items()]
    return pd.DataFrame(rows, columns=["column", "method", "threshold", "p-value"])


def artifact_json(client: MlflowClient, run_id: str, path: str) -> dict | None:
    """A JSON artifact of the run, or None when the run has none at ``path``."""
    data = _artifact(client, run_id, path)
    return None if data is None else json.loads(data)


def artifact_bytes(client: MlflowClient, run_id: str, path: str) -> bytes | None:
    return _artifact(client, run_id, path)


def _artifact(client: MlflowClient, run_id: str, path: str) -> bytes | None:
    with tempfile.TemporaryDirectory(prefix="raylane-console-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception as exc:
            err = translate(exc)
            text = str(exc).lower()
            if isinstance(err, NotFound) or "no such file" in text or "not found" in text \
                    or "does not exist" in text:
                return None
            raise err from exc
        return Path(local).read_bytes()


def distribution_frame(entry: dict) -> pd.DataFrame:
    """One column of ``distributions.json`` as a long table: bin or category, share, which."""
    if entry["kind"] == "numeric":
        edges = entry["edges"]
        base = {"from": edges[:-1], "to": edges[1:]}
    else:
        base = {"category": entry["categories"]}
    frames = [pd.DataFrame({**base, "share": entry[which], "data": which})
              for which in ("reference", "current")]
    return pd.concat(frames, ignore_index=True)


def scores_chart(scores: pd.DataFrame, limits: pd.DataFrame) -> alt.LayerChart:
    """Drift score over time, one line per column, with each distinct threshold as a rule."""
    lines = alt.Chart(scores).mark_line(point=True).encode(
        x=alt.X("time:T", title="window end (UTC)"),
        y=alt.Y("score:Q", title="drift score"),
        color=alt.Color("column:N"),
        tooltip=["column", alt.Tooltip("time:T", format="%Y-%m-%d %H:%M"),
                 alt.Tooltip("score:Q", format=".4f"), "drifted"])
    shown = limits[limits.column.isin(scores.column.unique())].dropna(subset=["threshold"])
    rules = shown.groupby(["method", "threshold"], as_index=False).agg(
        columns=("column", lambda c: ", ".join(sorted(c))))
    rules["label"] = rules.apply(
        lambda r: f"{r.method} threshold {r.threshold:g}", axis=1)
    rule = alt.Chart(rules).mark_rule(strokeDash=[6, 4], color="#d62728").encode(
        y="threshold:Q", tooltip=["label", "columns"])
    text = alt.Chart(rules).mark_text(align="left", dx=4, dy=-6, color="#d62728").encode(
        y="threshold:Q", text="label", x=alt.value(0))
    return alt.layer(lines, rule, text).properties(height=320)


def distribution_chart(frame: pd.DataFrame) -> alt.Chart:
    """Reference vs current shares: overlaid bars for numbers, grouped bars for categories."""
    colors = alt.Scale(domain=["reference", "current"], range=["#4c78a8", "#e45756"])
    if "category" in frame:
        return alt.Chart(frame).mark_bar().encode(
            x=alt.X("category:N", sort=None, title=None), xOffset="data:N",
            y=alt.Y("share:Q", axis=alt.Axis(format="%")),
            color=alt.Color("data:N", scale=colors, title=None),
            tooltip=["category", "data", alt.Tooltip("share:Q", format=".1%")]
        ).properties(height=280)
    return alt.Chart(frame).mark_bar(opacity=0.55).encode(
        x=alt.X("from:Q", bin="binned", title="value"), x2="to:Q",
        y=alt.Y("share:Q", stack=None, axis=alt.Axis(format="%")),
        color=alt.Color("data:N", scale=colors, title=None),
        tooltip=[alt.Tooltip("from:Q", format=".4g"), alt.Tooltip("to:Q", format=".4g"),
                 "data", alt.Tooltip("share:Q", format=".1%")]).properties(height=280)
