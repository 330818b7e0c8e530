"""``ray_jobs.monitor`` as users start it: ``ray job submit`` to a running Ray cluster, reading a
prediction log written by the service's own writer and a registry on this machine."""

from __future__ import annotations

import json
import os

import pytest
import serving_support as ss
from conftest import BIN, ROOT
from job_support import (
    ray_head,  # noqa: F401 - the fixture: a real `ray start --head`
    ray_job_submit,
)

from raylane.model.onnx_model import OnnxModel
from raylane.monitoring.reference import reference_sample
from raylane.release.gates import GateResult
from raylane.release.publish import publish
from raylane.serving.prediction_log import PredictionLog
from raylane.tracking.runs import ensure_experiment, mlflow_client, parent_run

pytestmark = pytest.mark.slow


def test_ray_job_submit_runs_the_monitor(ray_head, tmp_path):  # noqa: F811
    uri = ss.tracking_uri_for(tmp_path)
    trained = ss.train("credit", n_estimators=10, seed=0)
    client = mlflow_client(uri)
    with parent_run(client, ensure_experiment(client, "credit"), run_name="publish") as run_id:
        published = publish(
            trained.pipeline, trained.schema, trained.data.holdout, metric=trained.metric,
            gates=GateResult(passed=True), client=client, registered_model="credit-job",
            run_id=run_id, reference=reference_sample(trained.data.train, 5000, seed=0))
    # the service's writer, fed the holdout rows the graph scored
    model = OnnxModel(published.onnx_bytes, trained.schema)
    log_dir = tmp_path / "prediction_log"
    plog = PredictionLog(str(log_dir), sample_rate=1.0)
    X = trained.data.holdout.X
    plog.record("credit-job", "1", trained.schema, model.feeds_from_frame(X), len(X),
                model.predict_frame(X))
    assert plog.flush()
    report = tmp_path / "drift.json"
    submit = [str(BIN / "ray"), "job", "submit", "--address", ray_head,
              "--working-dir", str(ROOT),
              "--runtime-env", str(ROOT / "ray_jobs" / "runtime_env.yaml"), "--",
              "python", "-m", "ray_jobs.monitor", "--config", "tune_configs/credit_xgboost.yaml",
              "--predictions", str(log_dir), "--report", str(report),
              "--set", f"mlflow.tracking_uri={uri}",
              "--set", "mlflow.registered_model=credit-job",
              "--set", "monitoring.triggers.min_rows=100"]
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    out, log = ray_job_submit(submit, tmp_path, env)
    assert out.returncode == 0, log[-4000:]
    assert f"monitor: {len(X)} rows of credit-job v1" in log
    body = json.loads(report.read_text())
    assert body["rows"] == len(X) and body["decision"] in ("none", "retrain")
    run = client.get_run(body["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["raylane.monitor.model_name"] == "credit-job"
