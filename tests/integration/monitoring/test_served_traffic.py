"""Monitoring end to end: a credit model served by real Ray Serve logs the traffic it answers over
HTTP; the monitor reads that log with Ray Data and compares it with the version's reference
profile stored at registration.

- No-drift control: traffic drawn from the training distribution (rows the model never trained
  on) -> no column flagged, decision ``none``.
- Drift: the same traffic with ``Amount`` scaled by 1.5 and half the ``Home=owner`` rows turned
  into ``rent`` -> exactly those two columns flagged, decision ``retrain``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import serving as ss

from ray_jobs import monitor as monitor_job
from raylane.config import load_config
from raylane.monitoring import run_monitor
from raylane.monitoring.reference import reference_sample
from raylane.release.gates import GateResult
from raylane.release.publish import publish
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client, parent_run

pytestmark = pytest.mark.slow
ROWS = 2000
CONFIG = ss.ROOT / "tune_configs" / "credit_xgboost.yaml"


def shifted(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    out = rows.copy()
    out["Amount"] = (out["Amount"] * 1.5).round()  # Amount is an integer column
    owners = np.flatnonzero(out["Home"].to_numpy() == "owner")
    flip = np.random.default_rng(seed).choice(owners, len(owners) // 2, replace=False)
    out.loc[out.index[flip], "Home"] = "rent"
    return out


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]


def send(base: str, prefix: str, frame: pd.DataFrame) -> None:
    with httpx.Client(base_url=base, timeout=60) as client:
        for start in range(0, len(frame), 200):
            body = {"records": records(frame.iloc[start:start + 200])}
            response = client.post(f"{prefix}/predict", json=body)
            assert response.status_code == 200, response.text


def wait_logged(directory: Path, rows: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    total = 0
    while time.monotonic() < deadline:
        total = sum(pq.read_metadata(f).num_rows for f in directory.glob("predictions-*.parquet"))
        if total >= rows:
            assert total == rows
            return
        time.sleep(0.5)
    raise TimeoutError(f"{directory}: {total} of {rows} rows logged after {timeout}s")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    uri = ss.tracking_uri_for(tmp)
    trained = ss.train("credit", n_estimators=30, seed=0)
    client = mlflow_client(uri)
    with parent_run(client, open_experiment(client, "credit"), run_name="publish") as run_id:
        publish(trained.pipeline, trained.schema, trained.data.holdout, metric=trained.metric,
                gates=GateResult(passed=True), client=client, registered_model="credit",
                run_id=run_id, reference=reference_sample(trained.data.train, 5000, seed=0))
    unseen = pd.concat([trained.data.valid.X, trained.data.holdout.X], ignore_index=True)
    traffic = unseen.sample(ROWS, replace=True, random_state=1).reset_index(drop=True)
    logs = {"clean": tmp / "log-clean", "drift": tmp / "log-drift"}
    with ss.ray_serve(num_cpus=2) as base:
        for name, directory in logs.items():
            ss.deploy(name, ss.settings(uri, "models:/credit@champion", prediction_log={
                "enabled": True, "directory": str(directory), "sample_rate": 1.0,
                "flush_rows": 500, "flush_interval_s": 1.0}), route_prefix=f"/{name}",
                ray_actor_options={"num_cpus": 0.25})
        send(base, "/clean", traffic)
        send(base, "/drift", shifted(traffic))
        for directory in logs.values():
            wait_logged(directory, ROWS)
        config = load_config(CONFIG, [f"mlflow.tracking_uri={uri}",
                                      "monitoring.triggers.min_rows=500"])
        yield {"uri": uri, "config": config, "logs": logs, "tmp": tmp, "client": client}


def test_no_drift_control(env):
    # as a URI: the reader goes through fsspec for anything but a plain path
    report = run_monitor(env["config"], f"file://{env['logs']['clean']}",
                         report_path=str(env["tmp"] / "clean.json"))
    body = report.to_dict()
    assert body["rows"] == ROWS
    assert body["drifted_columns"] == [] and not body["dataset_drift"]
    assert report.decision == "none" and report.reasons[0].startswith("no trigger fired")
    assert body["model"]["version"] == "1"
    assert all(c["method"] in ("wasserstein", "jensenshannon") for c in body["columns"].values())
    assert not body["prediction"]["drift"]
    assert json.loads((env["tmp"] / "clean.json").read_text())["decision"] == "none"


def test_drift_flags_exactly_the_shifted_columns(env, capsys):
    path = env["tmp"] / "drift.json"
    code = monitor_job.main([
        "--config", str(CONFIG), "--predictions", str(env["logs"]["drift"]),
        "--report", str(path), "--set", f"mlflow.tracking_uri={env['uri']}",
        "--set", "monitoring.triggers.min_rows=500",
        # 2 of 13 columns: retrain when at least 15% of the columns drift
        "--set", "monitoring.drift.drift_share=0.15"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "decision: retrain" in out
    body = json.loads(path.read_text())
    assert body["rows"] == ROWS
    assert body["drifted_columns"] == ["Home", "Amount"]
    assert body["dataset_drift"] and body["decision"] == "retrain"
    assert body["reasons"][0].startswith("dataset drift: 2 of 13 columns drifted")
    assert body["columns"]["Amount"]["method"] == "wasserstein"
    assert body["columns"]["Amount"]["score"] >= 0.1
    assert body["columns"]["Home"]["method"] == "jensenshannon"

    client = env["client"]
    run = client.get_run(body["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "credit-monitoring"
    assert run.data.tags["raylane.monitor.model_version"] == "1"
    assert run.data.tags["raylane.monitor.decision"] == "retrain"
    history = client.get_metric_history(run.info.run_id, "drift.Amount.score")
    assert history[0].step == int(pd.Timestamp(body["window"]["until"]).timestamp())
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/drift_scores.png", "plots/drifted_distributions.png"}
    version = client.get_model_version("credit", "1")
    assert version.tags["raylane.monitor.last_run_id"] == body["run_id"]


def test_since_last_report_reads_only_new_rows(env):
    config = env["config"].model_copy(deep=True)
    config.monitoring.window.since_last_report = True
    first = run_monitor(config, str(env["logs"]["clean"]))
    again = run_monitor(config, str(env["logs"]["clean"]))  # nothing logged since the first
    assert again.to_dict()["rows"] == 0
    assert again.to_dict()["window"]["since"] == first.to_dict()["window"]["until"]
    assert again.decision == "none" and "fewer than triggers.min_rows" in again.reasons[0]
