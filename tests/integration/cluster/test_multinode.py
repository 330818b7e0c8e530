"""A Ray cluster of several nodes on one machine: nothing depends on one node's local disk or on
the driver's working directory.

The cluster (:class:`ray.cluster_utils.Cluster`, started from a scratch directory) mirrors the
KubeRay RayCluster: a head with ``num-cpus: 0`` (it runs the GCS, dashboard and the job driver,
never trials) and a worker node with CPUs; every node has ``MLFLOW_TRACKING_URI`` in its
environment, pointing at a real ``mlflow server`` over HTTP with proxied artifacts (the
``mlflow_server`` fixture). It is driven only through the head's dashboard, as KubeRay drives it:

1. Training: ``ray job submit --working-dir <repo> --runtime-env ray_jobs/runtime_env.yaml --
   python -m ray_jobs.train_pipeline --config tune_configs/credit_xgboost.yaml`` (the RayJob's
   entrypoint) from an unrelated directory. The driver runs in the uploaded package on the head;
   the dataset reaches trials through the object store, so they only run on the worker node (the
   head has no CPU), which the Ray state API confirms; trial child runs, plots and the ONNX model
   go to the server over HTTP, and the registered ``champion`` loads back from it.
2. Serving: ``serve deploy`` of the repo's ``serve/config.yaml`` (the RayService's serveConfigV2)
   with two replicas and ``max_replicas_per_node: 1``; each replica loads the model from the
   registry named by its node's ``MLFLOW_TRACKING_URI`` (``tracking_uri: null``); the Serve REST
   API and the state API show one replica per node, and real HTTP predictions match the model.
3. Autoscaling: Ray's fake multi-node provider (``FakeMultiNodeProvider``, plugged in as an
   external provider) with the dev overlay's RayService worker group (1-CPU pods from
   ``minReplicas`` to ``maxReplicas``, ``num-cpus``) and autoscaler v2: the autoscaler brings
   the group to its minimum, then starts one more worker node when Serve asks for one replica
   more than the minimum holds, and predictions succeed.

Each node has its own Ray temp dir, as each pod has its own disk. With one shared temp dir the
nodes share ``runtime_resources/``: when the trials on the worker end, its runtime-env agent deletes
the uploaded working dir that the driver on the head is still running in, and the job fails in Tune
(``FileNotFoundError`` from ``os.getcwd()``). That is an artefact of one machine, not of Kubernetes.

``ray.cluster_utils.AutoscalingCluster`` is not used: in Ray 2.60 its config template
(``fake_multi_node/example.yaml``) is missing from the wheel (the constructor raises
FileNotFoundError) and its ``start()``/``shutdown()`` run ``ray stop --force``, which would kill
every other Ray cluster on a shared machine. The test writes the same config itself and starts the
head in-process with ``RAY_FAKE_CLUSTER=1``; the worker nodes the autoscaler starts are stopped by
their session directory. The provider is named as ``type: external`` with the fake provider's
class as its module: with ``type: fake_multinode`` the autoscaler's monitor reads that same
missing example.yaml for its defaults and exits before scaling anything.

What one machine cannot prove: the nodes share one filesystem and one IP, so "no local disk"
is shown by construction (the driver's cwd is Ray's uploaded package, data goes through the object
store, artifacts through the MLflow server's HTTP proxy), not by separate disks. Tune keeps its
(small, checkpoint-free) experiment state on the head's disk, as the RayJob does. Fake autoscaled
nodes are processes, not pods: KubeRay's pod creation, scheduling and resource limits are not
exercised, and nodes' CPUs are logical.
Serve replicas ask for ``num_cpus: 0`` in part 2 (the config asks for 1) so one can sit on the
0-CPU head next to one on the worker: ``max_replicas_per_node: 1`` does the spreading.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from mlflow import MlflowClient
from support.multinode import (
    BIN,
    chdir,
    cluster_view,
    fixed_serve_config,
    own_address_file,
    require_multinode_host,
    run_cli,
    serve_applications,
    tail,
    trial_actors,
    two_node_cluster,
    wait_serve_running,
)
from support.net import free_port
from support.paths import CREDIT_CSV, ROOT

from raylane.data.read import read_table
from raylane.model import store
from raylane.model.onnx_model import OnnxModel

pytestmark = pytest.mark.slow

MODEL = "credit_multinode"
EXPERIMENT = "multinode"
# As tests/integration/training/test_job.py's FAST_XGB: few, small trials (two at a time
# fill the worker's CPUs).
FAST = [
    "tune.num_samples=3",
    "tune.max_concurrent_trials=2",
    "tune.search_alg=random",
    "model.search_space.n_estimators={type: qrandint, lower: 20, upper: 60, q: 10}",
    "model.report_every=10",
    f"mlflow.experiment={EXPERIMENT}",
    f"mlflow.registered_model={MODEL}",
]
ENTRYPOINT = ["python", "-m", "ray_jobs.train_pipeline",
              "--config", "tune_configs/credit_xgboost.yaml",
              *[a for item in FAST for a in ("--set", item)]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mlflow_server):
    """Head (0 CPUs, like the manifest's head) + one worker node (2 CPUs), started from an
    unrelated directory, with MLFLOW_TRACKING_URI on every node."""
    require_multinode_host()
    scratch = tmp_path_factory.mktemp("multinode-nodes")
    with two_node_cluster(mlflow_server, scratch) as nodes:
        yield {**nodes, "mlflow": mlflow_server}


@pytest.fixture(scope="module")
def trained(cluster, tmp_path_factory):
    """The training job, submitted the way a user (or KubeRay's RayJob submitter) does."""
    elsewhere = tmp_path_factory.mktemp("submitter")  # not the repo: the job must not need it
    submission_id = f"raylane-multinode-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    for _ in range(20):  # the dashboard answers before its job agent has registered
        proc = run_cli(
            [str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"],
             "--submission-id", submission_id, "--working-dir", str(ROOT),
             "--runtime-env", str(ROOT / "ray_jobs" / "runtime_env.yaml"), "--", *ENTRYPOINT],
            cwd=elsewhere, timeout=600,
        )
        if "No available agent" not in proc.stdout + proc.stderr:
            break
        time.sleep(3)
    return {"proc": proc, "submission_id": submission_id,
            "seconds": time.monotonic() - started}


def test_training_job_runs_trials_on_the_worker_node(cluster, trained):
    from ray.job_submission import JobStatus, JobSubmissionClient

    proc = trained["proc"]
    assert proc.returncode == 0, tail(proc)
    assert "Job 'raylane-multinode-" in proc.stdout and "succeeded" in proc.stdout, tail(proc)

    jobs = JobSubmissionClient(cluster["dashboard"])
    job = jobs.get_job_info(trained["submission_id"])
    assert job.status == JobStatus.SUCCEEDED
    assert job.driver_node_id == cluster["head"]  # the driver: on the head, as in KubeRay
    assert job.runtime_env["working_dir"].startswith("gcs://_ray_pkg_")  # uploaded, not a path

    # Every Tune trial ran on the worker node: the head has no CPU for a 1-CPU trial.
    trials = trial_actors(cluster["dashboard"])
    assert {a.node_id for a in trials} == {cluster["worker"]}, cluster_view(cluster["dashboard"])
    assert all(a.job_id == job.job_id for a in trials)

    # Tracking went over HTTP to the server, from the driver in Ray's uploaded package.
    client = MlflowClient(cluster["mlflow"])
    version = client.get_model_version_by_alias(MODEL, "champion")
    parent = client.get_run(version.run_id)
    source = parent.data.tags["mlflow.source.name"]
    assert "runtime_resources/working_dir_files/_ray_pkg_" in source, source
    assert not source.startswith(str(ROOT)), source
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:"), parent.info.artifact_uri
    assert parent.data.params["data.path"] == "data/credit_data.csv"  # relative to the package
    assert parent.data.tags["raylane.parity"] == "passed"
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 3
    assert {"plots/search_progress.png", "plots/roc.png"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id, "plots")}

    # The registered model comes back over HTTP (proxied artifacts) and predicts.
    registered = store.load_registered_model(f"models:/{MODEL}@champion",
                                                    cluster["mlflow"])
    assert registered.metadata["source_run_id"] == parent.info.run_id
    rows = read_table(str(CREDIT_CSV)).drop(columns=["Status"]).head(20)
    proba = OnnxModel(registered.onnx_bytes, registered.schema).predict_frame(rows).probabilities
    assert proba.shape == (20, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    print(f"training job: {trained['seconds']:.0f}s, {len(trials)} trial actors on the worker")


def serve_config(base: dict, port: int, log_dir: Path) -> dict:
    """serve/config.yaml with two fixed replicas spread one per node, on a free port."""
    return fixed_serve_config(base, port, log_dir, f"models:/{MODEL}@champion")


def test_serve_replicas_spread_over_both_nodes(cluster, trained, tmp_path):
    from ray.util.state import list_actors

    assert trained["proc"].returncode == 0, "training job failed; see the training test"
    base = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    port = free_port()
    cfg = serve_config(base, port, tmp_path / "prediction_log")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    app_name = cfg["applications"][0]["name"]
    dep_name = cfg["applications"][0]["deployments"][0]["name"]

    proc = run_cli([str(BIN / "serve"), "deploy", str(tmp_path / "serve.yaml"),
                    "--address", cluster["dashboard"]], cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, tail(proc)
    try:
        app = wait_serve_running(cluster["dashboard"], app_name, replicas=2)
        replicas = app["deployments"][dep_name]["replicas"]
        assert {r["node_id"] for r in replicas} == {cluster["head"], cluster["worker"]}
        actors = list_actors(address=cluster["dashboard"], detail=True, filters=[
            ("class_name", "=", f"ServeReplica:{app_name}:{dep_name}"), ("state", "=", "ALIVE")])
        assert sorted(a.node_id for a in actors) == sorted([cluster["head"], cluster["worker"]])

        registered = store.load_registered_model(f"models:/{MODEL}@champion",
                                                       cluster["mlflow"])
        model = OnnxModel(registered.onnx_bytes, registered.schema)
        frame = read_table(str(CREDIT_CSV)).drop(columns=["Status"]).head(40)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            health = http.get("/healthz").json()
            assert health == {"status": "ok", "model_name": MODEL,
                              "model_version": registered.version, "load_state": "current",
                              "pending_version": None}
            for start in range(0, len(frame), 4):  # several requests: both replicas take some
                rows = frame.iloc[start:start + 4]
                records = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                            for k, v in rec.items()} for rec in rows.to_dict(orient="records")]
                r = http.post("/predict", json={"records": records})
                assert r.status_code == 200, r.text
                out = r.json()
                assert out["model_name"] == MODEL
                np.testing.assert_allclose(out["probabilities"],
                                           model.predict_frame(rows).probabilities,
                                           rtol=1e-5, atol=1e-6)
    finally:
        done = run_cli([str(BIN / "serve"), "shutdown", "--address", cluster["dashboard"], "-y"],
                       cwd=tmp_path, timeout=120)
        assert done.returncode == 0, tail(done)
    assert serve_applications(cluster["dashboard"]).get("applications", {}) == {}


# ---------------------------------------------------------------- autoscaling (fake multi-node)


def manifest_worker_group() -> dict:
    """The dev overlay's RayService head and worker group, as KubeRay would scale them: 1-CPU
    pods, one per Serve replica from min_replicas to max_replicas (the base's 4-CPU pod holds
    every replica, so its group never grows past one node)."""
    from support.k8s import render_overlay

    (service,) = [o for o in render_overlay(ROOT / "kuberay" / "overlays" / "dev")
                  if o["kind"] == "RayService"]
    spec = service["spec"]["rayClusterConfig"]
    assert spec["enableInTreeAutoscaling"] is True
    (group,) = spec["workerGroupSpecs"]
    return {
        "name": group["groupName"],
        "min": int(group["minReplicas"]),
        "max": int(group["maxReplicas"]),
        "cpus": int(group["rayStartParams"]["num-cpus"]),
        "head_cpus": int(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]),
        "autoscaler": spec.get("autoscalerOptions", {}).get("version", "v1"),
    }


def test_autoscaler_adds_a_worker_for_serve_replicas(mlflow_server, tmp_path, monkeypatch):
    """Ray's fake multi-node provider with the manifest's worker group (min..max, num-cpus):
    Serve asks for more replicas than the head and the minimum workers hold, and the Ray
    autoscaler (v2, as ``autoscalerOptions.version``) starts another worker node for them."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
    from ray.cluster_utils import Cluster
    from ray.util.state import list_nodes
    from support import serving as ss

    group = manifest_worker_group()
    assert group["autoscaler"] == "v2"
    trained = ss.train("credit", n_estimators=10)
    published = ss.publish_trained(mlflow_server, "credit_autoscale", trained)
    version, holdout = str(published.version.version), trained.X
    onnx_bytes, schema = published.onnx_bytes, trained.schema

    gcs_port, dashboard_port = free_port(), free_port()
    from ray._private.services import get_node_ip_address

    gcs = f"{get_node_ip_address()}:{gcs_port}"
    # ray.cluster_utils.AutoscalingCluster would build this config, but in Ray 2.60 its template
    # (fake_multi_node/example.yaml) is not in the wheel, and its start()/shutdown() run
    # `ray stop --force`, which kills every Ray cluster on a shared machine. So: the same config
    # by hand, with the provider pointed at this head's GCS port.
    autoscaling = {
        "cluster_name": "raylane-fake",
        "max_workers": group["max"],
        # Ray's fake provider class as an "external" provider: the type "fake_multinode" makes
        # the autoscaler read its defaults from fake_multi_node/example.yaml, which the 2.60
        # wheel does not ship (the monitor dies with FileNotFoundError before scaling anything)
        "provider": {"type": "external",
                     "module": "ray.autoscaler._private.fake_multi_node.node_provider."
                               "FakeMultiNodeProvider",
                     "use_node_id_as_ip": True,
                     "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs, "launch_multiple": True,
                     "head_node_id": FAKE_HEAD_NODE_ID},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": group["head_cpus"]}, "node_config": {},
                                 "max_workers": 0},
            group["name"]: {"resources": {"CPU": group["cpus"]}, "node_config": {},
                            "min_workers": group["min"], "max_workers": group["max"]},
        },
        "head_node_type": "ray.head.default",
        "idle_timeout_minutes": 5,
        "upscaling_speed": 1.0,
        "auth": {}, "docker": {}, "file_mounts": {},
        **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands",
                           "worker_setup_commands", "head_start_ray_commands",
                           "worker_start_ray_commands", "cluster_synced_files",
                           "rsync_exclude", "rsync_filter")},
        "file_mounts_sync_continuously": False,
    }
    config_path = tmp_path / "autoscaling.yaml"
    config_path.write_text(yaml.safe_dump(autoscaling))

    # What `RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...` sets (the monitor and
    # the GCS read these from their environment); restored when the test ends.
    for key, value in {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                       "RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
                       "MLFLOW_TRACKING_URI": mlflow_server}.items():
        monkeypatch.setenv(key, value)
    for key in ("RAY_ADDRESS", "RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"):
        monkeypatch.delenv(key, raising=False)
    disks = Path(tempfile.mkdtemp(prefix="rlas-", dir="/tmp"))
    cluster = None
    session_dir = None
    address_file = own_address_file(disks)
    address_file.__enter__()
    try:
        with chdir(tmp_path):
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": group["head_cpus"], "gcs_server_port": gcs_port,
                "include_dashboard": True, "dashboard_port": dashboard_port,
                "autoscaling_config": str(config_path), "temp_dir": str(disks),
                "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
                             "MLFLOW_TRACKING_URI": mlflow_server},
            })
        session_dir = cluster.head_node.get_session_dir_path()
        dashboard = f"http://{cluster.head_node.webui_url}"
        from support.net import wait_http

        wait_http(f"{dashboard}/api/version", timeout=60)

        def workers() -> list:
            return [n for n in list_nodes(address=dashboard, detail=True, limit=100)
                    if n.state == "ALIVE" and not n.is_head_node]

        # minReplicas: the autoscaler brings the worker group up to its minimum by itself.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers()) < group["min"]:
            time.sleep(1)
        assert len(workers()) == group["min"]

        # One replica takes a whole worker (its num-cpus); ask for one more than min can hold.
        wanted = group["min"] + 1
        assert wanted <= group["max"]
        base = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
        port = free_port()
        cfg = serve_config(base, port, tmp_path / "prediction_log")
        dep = cfg["applications"][0]["deployments"][0]
        dep["num_replicas"] = wanted
        dep.pop("max_replicas_per_node")
        dep["ray_actor_options"]["num_cpus"] = group["cpus"]
        # Ray's fake provider gives its node types CPUs only (it cannot declare a node's
        # "memory" resource, which KubeRay derives from the pod's limits): a replica asking for
        # memory would look unplaceable on any node the autoscaler could add
        dep["ray_actor_options"].pop("memory", None)
        dep["user_config"]["model_uri"] = "models:/credit_autoscale@champion"
        (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        proc = run_cli([str(BIN / "serve"), "deploy", str(tmp_path / "serve.yaml"),
                        "--address", dashboard], cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, tail(proc)
        app = wait_serve_running(dashboard, "raylane", replicas=wanted, timeout=300)

        alive = workers()
        assert len(alive) == wanted  # the autoscaler added exactly the node(s) Serve needed
        replica_nodes = {r["node_id"] for r in app["deployments"]["RaylaneModel"]["replicas"]}
        assert replica_nodes == {n.node_id for n in alive}
        assert all(n.resources_total.get("CPU") == group["cpus"] for n in alive)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            health = http.get("/healthz").json()
            assert health == {"status": "ok", "model_name": "credit_autoscale",
                              "model_version": version, "load_state": "current",
                              "pending_version": None}
            rows = holdout.head(3)
            records = [{k: (None if isinstance(v, float) and np.isnan(v) else v)
                        for k, v in rec.items()} for rec in rows.to_dict(orient="records")]
            r = http.post("/predict", json={"records": records})
            assert r.status_code == 200, r.text
            np.testing.assert_allclose(
                r.json()["probabilities"],
                OnnxModel(onnx_bytes, schema).predict_frame(rows).probabilities,
                rtol=1e-5, atol=1e-6)
        run_cli([str(BIN / "serve"), "shutdown", "--address", dashboard, "-y"], cwd=tmp_path,
                timeout=120)
    finally:
        if cluster is not None:
            cluster.shutdown()
        if session_dir:  # worker nodes the autoscaler started are not the Cluster's to stop
            from support.processes import naming, terminate_naming

            terminate_naming(session_dir)
            assert naming(session_dir) == {}
        address_file.__exit__(None, None, None)
        shutil.rmtree(disks, ignore_errors=True)
