"""The console's Monitoring page (Streamlit AppTest) against a real `mlflow server` holding two
real monitoring runs: the monitor read a prediction log written by the service's own
writer, once of rows the model never trained on (with labels) and once with `Amount` scaled by
1.5. The page draws the drift over time, the distributions of a chosen column and live metrics."""

from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest
from support import serving as ss
from support.environ import restored_environ
from support.monitoring import monitoring_history

from raylane.monitoring.reference import reference_sample
from raylane.release.gates import GateResult
from raylane.release.publish import publish
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client, parent_run

pytestmark = pytest.mark.slow
PAGE = str(ss.ROOT / "console" / "pages" / "monitoring.py")
MODEL = "console-monitored"


@pytest.fixture(scope="module")
def monitored(mlflow_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-monitoring")
    trained = ss.train("credit", n_estimators=10, seed=0)
    client = mlflow_client(mlflow_server)
    with parent_run(client, open_experiment(client, "console"), run_name="publish") as run_id:
        published = publish(
            trained.pipeline, trained.schema, trained.data.holdout, metric=trained.metric,
            gates=GateResult(passed=True), client=client, registered_model=MODEL,
            run_id=run_id, reference=reference_sample(trained.data.train, 5000, seed=0))
    import ray

    # a log this small is read in the monitor's own process: no Ray starts for it
    ray_before = ray.is_initialized()
    first, second = monitoring_history(tmp, mlflow_server, MODEL, "console", trained,
                                       published.onnx_bytes)
    assert ray.is_initialized() == ray_before
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
