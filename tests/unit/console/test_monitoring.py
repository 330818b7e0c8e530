"""The Monitoring page's logic (raylane/console/monitoring.py) on monitoring runs logged by the
monitor's own code (drift.compare -> report -> tracking.log_report) into a real SQLite store, and
the page through Streamlit's AppTest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest
from support.paths import ROOT

from raylane.config import DriftConfig, TriggersConfig
from raylane.console import monitoring as mon
from raylane.data.read import read_table
from raylane.monitoring.drift import compare
from raylane.monitoring.recording import log_report
from raylane.monitoring.report import MonitorReport, build_body, decide
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client, parent_run

PAGE = str(ROOT / "console" / "pages" / "monitoring.py")
COLUMNS = {"Amount": "numeric", "Age": "numeric", "Home": "categorical"}


def _log(client, experiment_id: str, reference: pd.DataFrame, current: pd.DataFrame,
         until: datetime, labelled: bool = False) -> str:
    frame = lambda f: pa.Table.from_pandas(f[list(COLUMNS)].astype(  # noqa: E731
        {"Home": str}), preserve_index=False)
    drift = compare(frame(reference), frame(current), COLUMNS, DriftConfig())
    performance = {"labelled_rows": 300, "live": {"roc_auc": 0.7}} if labelled else None
    decision, reasons = decide(len(current), drift, None, None, TriggersConfig(min_rows=100))
    body = build_body(model={"name": "credit", "version": "1", "uri": "models:/credit/1",
                             "reference": "runs:/x/monitoring/reference"},
                      window={"since": None, "until": until.isoformat()}, rows=len(current),
                      drift=drift, drift_share_threshold=0.5, prediction=None,
                      performance=performance)
    with parent_run(client, experiment_id, run_name="monitor") as run_id:
        client.create_registered_model("credit") if not client.search_registered_models(
            "name = 'credit'") else None
        if not client.search_model_versions("name = 'credit'"):
            client.create_model_version("credit", source="runs:/x/model", run_id=run_id)
        log_report(client, run_id, MonitorReport(decision, reasons, run_id, body), until, drift)
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = mlflow_client(uri)
    experiment_id = open_experiment(client, "credit-monitoring")
    data = read_table(str(ROOT / "data" / "credit_data.csv"))
    reference, current = data.iloc[:2000], data.iloc[2000:3000].copy()
    now = datetime.now(UTC).replace(microsecond=0)
    clean = _log(client, experiment_id, reference, current, now - timedelta(hours=2))
    current["Amount"] = current["Amount"] * 1.5
    drifted = _log(client, experiment_id, reference, current, now - timedelta(hours=1),
                   labelled=True)
    return uri, client, clean, drifted


def test_scores_over_time_and_distributions(store):
    _uri, client, clean, drifted = store
    runs = mon.recent_runs(client, "credit", limit=10)
    assert [r.info.run_id for r in runs] == [drifted, clean]
    assert mon.recent_runs(client, "credit", limit=1)[0].info.run_id == drifted
    assert mon.recent_runs(client, "other") == []
    table = mon.runs_table(runs)
    assert list(table.run_id) == [drifted, clean] and table["drifted columns"][0] == "Amount"
    scores = mon.column_scores(runs)
    amount = scores[scores.column == "Amount"].sort_values("time")
    assert list(amount.drifted) == [False, True]
    assert set(scores.column) == set(COLUMNS)
    report = mon.artifact_json(client, drifted, mon.REPORT)
    limits = mon.thresholds(report)
    assert set(limits.method) <= {"wasserstein", "jensenshannon", "ks", "chisquare", "z"}
    chart = mon.scores_chart(scores, limits).to_dict()
    assert len(chart["layer"]) == 3
    dists = mon.artifact_json(client, drifted, mon.DISTRIBUTIONS)
    amount_frame = mon.distribution_frame(dists["Amount"])
    assert set(amount_frame.data) == {"reference", "current"}
    assert amount_frame.groupby("data").share.sum().round(6).tolist() == [1.0, 1.0]
    assert "category" in mon.distribution_frame(dists["Home"])
    live = mon.live_metrics(runs)
    assert list(live.metric) == ["roc_auc"] and live.value[0] == 0.7
    assert mon.artifact_json(client, drifted, "monitoring/none.json") is None


def test_page_draws_the_drift_of_the_runs(store, monkeypatch):
    uri, *_ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RAYLANE_MODEL", "credit")
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "retrain" or at.metric[0].value == "none"
    assert at.multiselect(key="monitoring_columns").value == ["Amount"]
    assert len(at.get("vega_lite_chart")) == 3  # scores, distribution, live metrics
    at.selectbox(key="monitoring_column").set_value("Home").run()
    assert not at.exception


def test_page_without_runs_says_how_to_make_them(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_client(uri).search_experiments()  # an empty store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = AppTest.from_file(PAGE, default_timeout=30).run()
    assert not at.exception and "ray_jobs.monitor" in at.info[0].value
