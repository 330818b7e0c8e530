"""A data-parallel trial spread over two worker nodes, then served from the same cluster.

The cluster (:func:`support.multinode.two_node_cluster` plus a second worker node) is the
KubeRay shape on one machine: a head with 0 CPUs (GCS, dashboard, driver) and two worker nodes
with 2 logical CPUs each, every node with its own temp dir and ``MLFLOW_TRACKING_URI`` pointing
at a real ``mlflow server``. The dashboard stays on: Ray Train's placement-group cleaner needs
the State API.

The job (``tune_configs/credit_xgboost_scale.yaml``, the data-parallel RayJob's config, on a
Parquet copy of the credit table) runs one trial of ``workers_per_trial: 2`` x 1 CPU with
``placement_strategy: SPREAD``. With the trial function's 0.01 CPU on one node, that node has
1.99 CPUs left and the other 2: PACK puts both Train workers on the other node, SPREAD one on
each. Ray's state API shows the trial's two ``RayTrainWorker`` actors on the two worker nodes,
in a SPREAD placement group the search removed; the booster is registered in MLflow; the
registered ONNX graph then answers a real HTTP prediction from a Serve app on the same cluster.
"""

from __future__ import annotations

import time
from collections import defaultdict

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from support.multinode import (
    BIN,
    add_worker,
    fixed_serve_config,
    require_multinode_host,
    run_cli,
    serve_applications,
    tail,
    two_node_cluster,
    wait_serve_running,
)
from support.net import free_port
from support.paths import CREDIT_CSV, ROOT

from raylane.config import load_config
from raylane.model import store
from raylane.model.onnx_model import OnnxModel

pytestmark = pytest.mark.slow

MODEL = "credit_spread"
CONFIG = ROOT / "tune_configs" / "credit_xgboost_scale.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mlflow_server):
    """Head (0 CPUs) and two worker nodes of 2 CPUs, each node with its own temp dir."""
    require_multinode_host()
    scratch = tmp_path_factory.mktemp("spread-nodes")
    with two_node_cluster(mlflow_server, scratch) as nodes:
        second = add_worker(nodes["cluster"], nodes["env"], nodes["disks"] / "worker2")
        nodes["cluster"].wait_for_nodes(timeout=60)
        yield {**nodes, "workers": {nodes["worker"], second.node_id}, "mlflow": mlflow_server}


@pytest.fixture(scope="module")
def trained(cluster, tmp_path_factory):
    """The data-parallel job, its driver in this process (connected to the cluster)."""
    import ray

    from raylane.training.job import run_pipeline

    frame = pd.read_csv(CREDIT_CSV)
    table = tmp_path_factory.mktemp("credit-parquet")
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 2)):
        frame.iloc[part].to_parquet(table / f"part-{i}.parquet", index=False)
    tmp = tmp_path_factory.mktemp("spread-job")
    config = load_config(CONFIG, [
        f"data.path={table}",
        "tune.num_samples=1", "tune.max_concurrent_trials=1", "tune.search_alg=random",
        "tune.scheduler.type=fifo", "tune.time_budget_s=null",
        "model.search_space={max_depth: {type: grid, values: [3]}}",
        "model.params={tree_method: hist, n_jobs: 1, n_estimators: 20}",
        "model.report_every=10",
        f"tune.storage_path={tmp / 'ray_results'}",
        f"mlflow.tracking_uri={cluster['mlflow']}", "mlflow.experiment=spread",
        f"mlflow.registered_model={MODEL}",
    ])
    assert config.tune.placement_strategy == "SPREAD" and config.tune.workers_per_trial == 2
    started = time.monotonic()
    ray.init(address=cluster["cluster"].address, log_to_driver=False)
    try:
        result = run_pipeline(config)
        # every placement group of the job, removed ones too, with its strategy (from the GCS)
        groups = ray.util.placement_group_table()
    finally:
        ray.shutdown()
    return {"result": result, "groups": groups, "seconds": time.monotonic() - started}


def test_the_trial_s_train_workers_run_on_two_nodes(cluster, trained):
    from ray.util.state import list_actors

    result = trained["result"]
    assert result.search.errored_trials == 0
    assert len(result.search.trials) == 1
    workers = list_actors(address=cluster["dashboard"], detail=True, limit=1000,
                          filters=[("class_name", "=", "RayTrainWorker")])
    by_group: dict[str, list[str]] = defaultdict(list)
    for actor in workers:
        by_group[actor.placement_group_id].append(actor.node_id)
    assert len(by_group) == 1, by_group  # the trial's Train run: one worker group
    ((group, nodes),) = by_group.items()
    assert len(nodes) == 2 and len(set(nodes)) == 2, (group, nodes)  # one worker per node
    assert set(nodes) == cluster["workers"]  # never the 0-CPU head
    info = trained["groups"][group]
    assert info["strategy"] == "SPREAD", info
    assert info["state"] == "REMOVED", info  # the search gave the worker group back
    print(f"data-parallel job on two nodes: {trained['seconds']:.0f}s")


def test_the_registered_graph_serves_from_the_cluster(cluster, trained, tmp_path):
    result = trained["result"]
    assert result.decision.promoted
    registered = store.load_registered_model(f"models:/{MODEL}@champion", cluster["mlflow"])
    assert registered.version == result.version
    base = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    port = free_port()
    cfg = fixed_serve_config(base, port, tmp_path / "prediction_log",
                             f"models:/{MODEL}@champion", replicas=1, max_per_node=None)
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    app_name = cfg["applications"][0]["name"]
    proc = run_cli([str(BIN / "serve"), "deploy", str(tmp_path / "serve.yaml"),
                    "--address", cluster["dashboard"]], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, tail(proc)
    try:
        wait_serve_running(cluster["dashboard"], app_name, replicas=1)
        rows = pd.read_csv(CREDIT_CSV).drop(columns=["Status"]).head(5)
        records = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                    for k, v in rec.items()} for rec in rows.to_dict(orient="records")]
        r = httpx.post(f"http://127.0.0.1:{port}/predict", json={"records": records},
                       timeout=30)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model_name"] == MODEL and str(out["model_version"]) == registered.version
        expected = OnnxModel(registered.onnx_bytes, registered.schema).predict_frame(rows)
        np.testing.assert_allclose(out["probabilities"], expected.probabilities,
                                   rtol=1e-5, atol=1e-6)
    finally:
        done = run_cli([str(BIN / "serve"), "shutdown", "--address", cluster["dashboard"],
                        "-y"], cwd=tmp_path, timeout=120)
        assert done.returncode == 0, tail(done)
    assert serve_applications(cluster["dashboard"]).get("applications", {}) == {}
