"""Shared helpers for the serving tests: real models in a real MLflow registry, a real Ray Serve.

Models are trained with the library's primitives (no Ray Tune) on the bundled credit data
(classification) and a sample of the diamonds data (regression) and published with
``raylane.release.publish.publish``, the training job's own export -> parity -> register -> promote.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.pipeline import Pipeline

from raylane.config import GatesConfig
from raylane.data.read import PreparedData, infer_schema, read_table, split_data
from raylane.model.families import get_family
from raylane.model.metrics import METRICS, Metric
from raylane.model.schema import FeatureSchema
from raylane.release.export import to_onnx
from raylane.release.gates import check_gates, evaluate
from raylane.release.publish import Published, publish
from raylane.tracking.experiments import open_experiment
from raylane.tracking.registry import (
    CHAMPION,
    log_logged_model,
    log_onnx_model,
    register_version,
    set_alias,
)
from raylane.tracking.runs import mlflow_client, parent_run
from raylane.training.fit import fit_model
from support.environ import restored_environ
from support.net import free_port
from support.paths import CREDIT_CSV, DIAMONDS_CSV, ROOT


def tracking_uri_for(tmp: Path) -> str:
    return f"sqlite:///{(tmp / 'mlflow.db').resolve()}"


def load_frame(kind: str) -> tuple[pd.DataFrame, str]:
    if kind == "credit":
        return read_table(str(CREDIT_CSV)), "Status"
    # numeric columns only: the all-numeric model that takes one [N, F] V2 tensor
    frame = read_table(str(DIAMONDS_CSV), columns=["carat", "depth", "table", "x", "y", "z",
                                                  "price"])
    return frame.sample(3000, random_state=0).reset_index(drop=True), "price"


@dataclass
class Trained:
    """A fitted pipeline on its split data, as the training job's refit leaves it."""

    pipeline: Pipeline
    data: PreparedData
    metric: Metric

    @property
    def schema(self) -> FeatureSchema:
        return self.data.schema

    @property
    def X(self) -> pd.DataFrame:
        """The holdout features."""
        return self.data.holdout.X

    @property
    def onnx_bytes(self) -> bytes:
        return to_onnx(self.pipeline, self.schema)


def train(kind: str, n_estimators: int = 30, seed: int = 0) -> Trained:
    """An XGBoost pipeline for ``kind`` in {'credit', 'diamonds'} (no Ray Tune)."""
    frame, target = load_frame(kind)
    schema = infer_schema(frame, target, None)
    data = split_data(frame, schema, 0.2, 0.1, seed)
    metric = METRICS["roc_auc" if schema.task == "classification" else "rmse"]
    fit = fit_model(
        data, get_family("xgboost"), {"n_estimators": n_estimators, "max_depth": 4}, metric, seed
    )
    return Trained(fit.pipeline, data, metric)


def publish_trained(
    tracking_uri: str, name: str, trained: Trained, promote: bool = True,
    gates: GatesConfig | None = None,
) -> Published:
    """Publish ``trained`` as the training job does: export, parity, register, promotion (with
    the default gates). ``promote=False`` registers it as ``challenger`` only."""
    client = mlflow_client(tracking_uri)
    experiment_id = open_experiment(client, "serving-tests")
    evaluation = evaluate(trained.pipeline, trained.data, trained.metric, 0.25)
    with parent_run(client, experiment_id, run_name=f"publish-{name}") as run_id:
        return publish(
            trained.pipeline, trained.schema, trained.data.holdout, metric=trained.metric,
            gates=check_gates(evaluation, gates or GatesConfig()), client=client,
            registered_model=name, run_id=run_id, tags={"source": "serving-tests"},
            promote=promote,
        )


def register_raw(
    tracking_uri: str, name: str, onnx_bytes: bytes, schema: FeatureSchema, example: pd.DataFrame,
    alias: str | None = CHAMPION,
) -> str:
    """Register ``onnx_bytes`` without the parity check or a promotion decision: only for the
    deliberately broken versions serving must refuse. Returns the version."""
    client = mlflow_client(tracking_uri)
    experiment_id = open_experiment(client, "serving-tests")
    example = example.head(3)
    out = pd.DataFrame({"y": np.zeros(len(example))})
    with parent_run(client, experiment_id, run_name=f"broken-{name}") as run_id:
        logged = log_onnx_model(client, run_id, onnx_bytes, schema, example, out)
        mv = register_version(client, logged, name, run_id, {"source": "serving-tests"})
    if alias:
        set_alias(client, name, alias, mv.version)
    return str(mv.version)


def register_broken(tracking_uri: str, name: str, schema, example, how: str) -> str:
    """A version that must never be served: corrupt ONNX bytes, or no raylane schema metadata."""
    import onnx

    if how == "corrupt_onnx":
        # a valid-looking ONNX graph whose inputs do not match the schema's columns
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])], "broken",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1])],
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        return register_raw(tracking_uri, name, model.SerializeToString(), schema, example)
    if how == "no_schema":  # a real ONNX model logged by plain MLflow: no raylane metadata
        import mlflow.onnx

        client = mlflow_client(tracking_uri)
        graph = onnx.load_model_from_string(train("credit", n_estimators=5).onnx_bytes)
        experiment_id = open_experiment(client, "serving-tests")
        with parent_run(client, experiment_id, run_name=f"plain-{name}") as run_id:
            logged = log_logged_model(client, run_id, "model", lambda path, mm: (
                mlflow.onnx.save_model(graph, path, mlflow_model=mm, save_as_external_data=False)
            ))
            mv = register_version(client, logged, name, run_id, {})
        set_alias(client, name, CHAMPION, mv.version)
        return str(mv.version)
    raise ValueError(how)


def move_alias(tracking_uri: str, name: str, version: str, alias: str = CHAMPION) -> None:
    set_alias(mlflow_client(tracking_uri), name, alias, version)


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
    """A fresh local Ray cluster with Serve on a free port; yields the base URL.

    On exit Serve and Ray are shut down, the cached Serve client is dropped, and ``os.environ``
    is restored: ``ray.init`` exports ``RAY_USAGE_STATS_ENABLED=0`` and this sets Serve's proxy
    timeouts, which every Ray node a later test starts from this process would inherit."""
    import ray
    from ray import serve

    with restored_environ():
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
                serve.context._set_global_client(None)  # even if shutdown raised
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


def fixed_replicas_config(port: int, log_dir: Path, replicas: int,
                          max_rows: int | None = None) -> dict:
    """``serve/config.yaml`` as shipped, with ``replicas`` fixed replicas of half a CPU (no
    autoscaling), the proxy on 127.0.0.1:``port`` and the prediction log in ``log_dir``."""
    cfg = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    cfg["http_options"].update(host="127.0.0.1", port=port)
    (dep,) = cfg["applications"][0]["deployments"]
    del dep["autoscaling_config"]
    dep["num_replicas"] = replicas
    dep["ray_actor_options"]["num_cpus"] = 0.5
    dep["user_config"]["prediction_log"]["directory"] = str(log_dir)
    if max_rows is not None:
        dep["user_config"]["limits"]["max_rows"] = max_rows
    return cfg


def ray_cli_env() -> dict[str, str]:
    """The environment a Ray CLI or REST client of a token-auth cluster runs with, read now (a
    test may have given itself its own HOME, and with it its own ``~/.ray/auth_token``)."""
    return {**os.environ, "RAY_AUTH_MODE": "token"}


def new_machine_home(tmp_path: Path, monkeypatch) -> Path:
    """Give the test an empty HOME, as on a new machine: no ``~/.ray/auth_token`` that an
    earlier test's Ray wrote, so what starts a cluster must make the token itself."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home
