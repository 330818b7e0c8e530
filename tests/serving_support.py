"""Shared helpers for the serving tests: real models in a real MLflow registry, a real Ray Serve.

Models are trained with the library's primitives (no Ray Tune) on the bundled credit data
(classification) and a sample of the diamonds data (regression), exported to ONNX, logged and
registered with the ``champion`` alias, exactly as the training pipeline does.
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from raylane.data import infer_schema, read_table, split_data
from raylane.export import to_onnx
from raylane.metrics import METRICS
from raylane.models import get_family
from raylane.registry import CHAMPION, log_onnx_model, register_version, set_alias
from raylane.training import fit_model

ROOT = Path(__file__).resolve().parents[1]
CREDIT_CSV = ROOT / "data" / "credit_data.csv"
DIAMONDS_CSV = Path(os.environ.get("RAYLANE_DIAMONDS_CSV", ROOT / "data" / "diamonds_sample.csv"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tracking_uri_for(tmp: Path) -> str:
    return f"sqlite:///{(tmp / 'mlflow.db').resolve()}"


def load_frame(kind: str) -> tuple[pd.DataFrame, str]:
    if kind == "credit":
        return read_table(str(CREDIT_CSV)), "Status"
    # numeric columns only: the all-numeric model that takes one [N, F] V2 tensor
    frame = read_table(str(DIAMONDS_CSV), columns=["carat", "depth", "table", "x", "y", "z",
                                                  "price"])
    return frame.sample(3000, random_state=0).reset_index(drop=True), "price"


def train_onnx(kind: str, n_estimators: int = 30, seed: int = 0):
    """(onnx_bytes, schema, X_holdout) for ``kind`` in {'credit', 'diamonds'}."""
    frame, target = load_frame(kind)
    schema = infer_schema(frame, target, None)
    data = split_data(frame, schema, 0.2, 0.1, seed)
    metric = METRICS["roc_auc" if schema.task == "classification" else "rmse"]
    fit = fit_model(
        data, get_family("xgboost"), {"n_estimators": n_estimators, "max_depth": 4}, metric, seed
    )
    return to_onnx(fit.pipeline, schema), schema, data.holdout.X, fit.pipeline


def register(
    tracking_uri: str, name: str, onnx_bytes: bytes, schema, example: pd.DataFrame,
    alias: str | None = CHAMPION, extra_metadata: dict | None = None,
) -> str:
    """Log ``onnx_bytes`` in a new run, register it as a version of ``name``; return the version."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    example = example.head(3)
    out = pd.DataFrame({"y": np.zeros(len(example))})
    with mlflow.start_run() as run:
        info = log_onnx_model(onnx_bytes, schema, example, out, extra_metadata=extra_metadata)
        mv = register_version(client, info, name, run.info.run_id, {"source": "serving-tests"})
    if alias:
        set_alias(client, name, alias, mv.version)
    return str(mv.version)


def register_broken(tracking_uri: str, name: str, schema, example, how: str) -> str:
    """A version that must never be served: corrupt ONNX bytes, or no raylane schema metadata."""
    if how == "corrupt_onnx":
        import onnx

        # a valid-looking ONNX graph whose inputs do not match the schema's columns
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])], "broken",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1])],
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        return register(tracking_uri, name, model.SerializeToString(), schema, example)
    if how == "no_schema":  # a real ONNX model logged by plain MLflow: no raylane metadata
        import onnx

        mlflow.set_tracking_uri(tracking_uri)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        graph = onnx.load_model_from_string(train_onnx("credit", n_estimators=5)[0])
        with mlflow.start_run() as run:
            info = mlflow.onnx.log_model(graph, name="model", save_as_external_data=False)
            mv = register_version(client, info, name, run.info.run_id, {})
        set_alias(client, name, CHAMPION, mv.version)
        return str(mv.version)
    raise ValueError(how)


def move_alias(tracking_uri: str, name: str, version: str, alias: str = CHAMPION) -> None:
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    set_alias(client, name, alias, version)


def settings(tracking_uri: str, model_uri: str, **over) -> dict:
    """A tight test ``user_config``."""
    cfg = {
        "model_uri": model_uri,
        "tracking_uri": tracking_uri,
        "poll_interval_s": 0,
        "batching": {"enabled": True, "max_batch_size": 8, "batch_wait_timeout_s": 0.0},
        "limits": {"max_rows": 2000, "max_body_bytes": 1_000_000},
    }
    cfg.update(over)
    return cfg


@contextmanager
def ray_serve(num_cpus: int = 4):
    """A fresh local Ray cluster with Serve on a free port; yields the base URL."""
    import ray
    from ray import serve

    for var in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_ADDRESS"):
        os.environ.pop(var, None)
    # a busy 2-core CI machine can take longer than the 5 s default to bring the proxy up
    os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
    os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
    port = free_port()
    ray.init(num_cpus=num_cpus, include_dashboard=False, address="local",
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def deploy(app_name: str, user_config: dict, route_prefix: str = "/", **options) -> None:
    from ray import serve

    from raylane.serving.app import ModelServer

    opts = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}, **options}
    serve.run(
        ModelServer.options(user_config=user_config, **opts).bind(),
        name=app_name, route_prefix=route_prefix, blocking=False,
    )
    wait_running(app_name)


def wait_running(app_name: str, timeout: float = 120) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app_name)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status == "DEPLOY_FAILED":
            raise RuntimeError(f"{app_name}: {status.message}")
        time.sleep(0.5)
    raise TimeoutError(f"{app_name} not running after {timeout}s: {status}")


def replica_count(app_name: str) -> int:
    from ray import serve

    app = serve.status().applications.get(app_name)
    if app is None:
        return 0
    return sum(d.replica_states.get("RUNNING", 0) for d in app.deployments.values())
