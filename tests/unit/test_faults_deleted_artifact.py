"""Fault: the champion alias moves to a version whose artifacts were deleted.

Budget: zero failed requests; the replica keeps serving the old version and says why
(``/metadata``: ``load_status.state == "gave_up"``, ``last_error.reason == "artifact_missing"``;
``/healthz``: ``load_state``); the deleted version is not downloaded again at every poll; a
later good version is picked up.

A real MLflow registry (SQLite, local artifact store), real ONNX models, the real replica
(:class:`~raylane.serving.replica.Replica` with its default registry fetch) and app in-process.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tiny_serving_model import ROWS, SCHEMA, tiny_onnx

from raylane.serving.api import bind, build_api
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.replica import Replica
from raylane.tracking.registry import log_onnx_model, register_version, set_alias
from raylane.tracking.runs import ensure_experiment, mlflow_client, parent_run

URI = "models:/credit@champion"
RECORDS = [{"age": 30.0, "income": 50.0, "home": "rent"}]


def register(tracking_uri: str, experiment_id: str, onnx_bytes: bytes) -> tuple[str, Path]:
    """A new version of ``credit``; its version and local artifact directory."""
    client = mlflow_client(tracking_uri)
    with parent_run(client, experiment_id) as run_id:
        logged = log_onnx_model(client, run_id, onnx_bytes, SCHEMA, ROWS.head(2).astype(float,
                                errors="ignore"), pd.DataFrame({"y": [0.0, 1.0]}))
        mv = register_version(client, logged, "credit", run_id, {})
    return str(mv.version), Path(mv.source.removeprefix("file://"))


@pytest.fixture()
def registry(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id = ensure_experiment(mlflow_client(uri), "faults",
                                      artifact_location=str(tmp_path / "artifacts"))
    return uri, experiment_id


def test_a_champion_with_deleted_artifacts_is_refused_and_explained(registry):
    uri, experiment_id = registry
    onnx_bytes = tiny_onnx()
    v1, _ = register(uri, experiment_id, onnx_bytes)
    v2, v2_files = register(uri, experiment_id, onnx_bytes)
    client = mlflow_client(uri)
    set_alias(client, "credit", "champion", v1)

    async def main():
        replica = Replica()
        fetched: list[str] = []
        fetch = replica.holder._fetch
        replica.holder._fetch = lambda u, t: fetched.append(u) or fetch(u, t)
        await replica.reconfigure({"model_uri": URI, "tracking_uri": uri, "poll_interval_s": 0})
        api = build_api(PROTOCOLS)
        bind(api, replica.plane, PROTOCOLS)
        out = {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api),
                                     base_url="http://replica") as http:
            shutil.rmtree(v2_files)  # the artifacts go; the registry still lists the version
            set_alias(client, "credit", "champion", v2)
            await replica.poll()
            await replica.poll()  # a second poll: the version is not downloaded again
            out["predict"] = (await http.post("/predict", json={"records": RECORDS}))
            out["metadata"] = (await http.get("/metadata")).json()
            out["healthz"] = (await http.get("/healthz")).json()
            out["fetches_after_v2"] = len(fetched) - 1
            v3, _ = register(uri, experiment_id, onnx_bytes)
            set_alias(client, "credit", "champion", v3)
            await replica.poll()
            out["v3"], out["after"] = v3, (await http.get("/healthz")).json()
        await replica.stop()
        return out

    out = asyncio.run(main())
    assert out["predict"].status_code == 200 and out["predict"].json()["model_version"] == v1
    meta = out["metadata"]
    assert meta["version"] == v1
    assert meta["last_error"]["reason"] == "artifact_missing"
    assert (meta["last_error"]["version"], meta["last_error"]["kept_version"]) == (v2, v1)
    status = meta["load_status"]
    assert (status["state"], status["pending_version"], status["attempts"]) == ("gave_up", v2, 1)
    assert status["last_load_error"] == "permanent: MlflowException"
    assert out["healthz"] == {"status": "ok", "model_name": "credit", "model_version": v1,
                              "load_state": "gave_up", "pending_version": v2}
    assert out["fetches_after_v2"] == 1
    assert out["after"]["model_version"] == out["v3"] and out["after"]["load_state"] == "current"
