"""The console's Monitoring page (Streamlit AppTest) against a real `mlflow server` holding two
real monitoring runs: the monitor (Ray Data) read a prediction log written by the service's own
writer, once of rows the model never trained on (with labels) and once with `Amount` scaled by
1.5. The page draws the drift over time, the distributions of a chosen column and live metrics."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import serving_support as ss
from process_state import restored_environ
from streamlit.testing.v1 import AppTest

from raylane.config import load_config
from raylane.evaluation import GateResult
from raylane.monitoring import run_monitor
from raylane.monitoring.reference import reference_sample
from raylane.onnx_model import OnnxModel
from raylane.publishing import publish
from raylane.serving.prediction_log import PredictionLog
from raylane.tracking import ensure_experiment, mlflow_client, parent_run

pytestmark = pytest.mark.slow
PAGE = str(ss.ROOT / "console" / "pages" / "monitoring.py")
MODEL = "console-monitored"


def write_log(directory, trained, model: OnnxModel, X: pd.DataFrame) -> pd.DataFrame:
    """The service's writer logging ``X`` as answered; the logged rows (with their ids)."""
    plog = PredictionLog(str(directory), sample_rate=1.0)
    plog.record(MODEL, "1", trained.schema, model.feeds_from_frame(X), len(X),
                model.predict_frame(X))
    assert plog.flush()
    return pd.read_parquet(directory)


@pytest.fixture(scope="module")
def monitored(mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-monitoring")
    trained = ss.train("credit", n_estimators=10, seed=0)
    client = mlflow_client(mlflow_server)
    with parent_run(client, ensure_experiment(client, "console"), run_name="publish") as run_id:
        published = publish(
            trained.pipeline, trained.schema, trained.data.holdout, metric=trained.metric,
            gates=GateResult(passed=True), client=client, registered_model=MODEL,
            run_id=run_id, reference=reference_sample(trained.data.train, 5000, seed=0))
    model = OnnxModel(published.onnx_bytes, trained.schema)
    start = datetime.now(UTC) - timedelta(minutes=1)
    X = trained.data.holdout.X.reset_index(drop=True)
    clean = write_log(tmp / "clean", trained, model, X)
    shifted = X.assign(Amount=(X["Amount"] * 1.5).round())
    write_log(tmp / "drift", trained, model, shifted)
    labels = tmp / "labels.csv"
    classes = trained.schema.class_labels
    pd.DataFrame({"prediction_id": clean["prediction_id"],
                  "label": [classes[i] for i in trained.data.holdout.y]}).to_csv(labels,
                                                                                  index=False)
    config = load_config(ss.ROOT / "tune_configs" / "credit_xgboost.yaml", [
        f"mlflow.tracking_uri={mlflow_server}", f"mlflow.registered_model={MODEL}",
        "mlflow.experiment=console", "monitoring.triggers.min_rows=100",
        "monitoring.triggers.min_labelled_rows=50"])
    import ray

    with restored_environ():
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=1, include_dashboard=False, address="local")
        try:
            first = run_monitor(config, str(tmp / "clean"), labels=str(labels), since=start)
            second = run_monitor(config, str(tmp / "drift"), since=start)
        finally:
            ray.shutdown()
    assert second.to_dict()["drifted_columns"] == ["Amount"]
    return mlflow_server, first, second


def test_page_shows_drift_over_time_distributions_and_live_metrics(monitored):
    url, first, second = monitored
    with restored_environ():
        os.environ.update(MLFLOW_TRACKING_URI=url, RAYLANE_MODEL=MODEL)
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        assert not at.exception, at.exception
        assert at.metric[0].value == second.decision  # 1 of 13 columns: no dataset drift
        assert at.metric[3].value == "2"  # runs shown
        assert at.multiselect(key="monitoring_columns").value == ["Amount"]
        charts = at.get("vega_lite_chart")
        assert len(charts) == 3  # drift over time, reference vs current, live metrics
        assert at.selectbox(key="monitoring_run").value == second.run_id
        at.selectbox(key="monitoring_column").set_value("Amount").run()
        assert at.selectbox(key="monitoring_run").value == second.run_id  # the choice is kept
        assert verdict(at) == "drifted"  # the shifted window
        at.selectbox(key="monitoring_run").set_value(first.run_id).run()
        assert not at.exception, at.exception
        assert at.selectbox(key="monitoring_column").value == "Amount"
        assert verdict(at) == "no drift"  # the control window: rows the model never saw


def verdict(at: AppTest) -> str:
    """The chosen column's verdict under the reference-vs-current chart."""
    shown = [c.value for c in at.caption if "(threshold" in c.value]
    assert len(shown) == 1, shown
    return shown[0].rsplit(": ", 1)[1]
