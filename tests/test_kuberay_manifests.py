"""Every manifest kustomize renders (every overlay, platform and jobs) is schema-valid and
follows the platform rules (resources, non-root, autoscaling, MLflow wiring, KubeRay rules).

Schemas: KubeRay v1.7.0 CRDs (vendored in kuberay/crds) with unknown fields as errors, and the
Kubernetes 1.37 OpenAPI schemas through kubernetes-validate (strict). See tests/k8s_support.py.
"""

from __future__ import annotations

import copy

import k8s_support as k8s
import pytest

OVERLAY_IDS = [p.name for p in k8s.OVERLAYS]


def _all_objects() -> list[tuple[str, dict]]:
    out = []
    for overlay in k8s.OVERLAYS:
        out += [(f"{overlay.name}:{k8s.obj_id(o)}", o) for o in k8s.render_overlay(overlay)]
    for overlay in k8s.JOB_OVERLAYS:
        out += [(f"{k8s.overlay_name(overlay)}:{k8s.obj_id(o)}", o)
                for o in k8s.render_overlay(overlay)]
    return out


ALL = _all_objects()
RAY = [(i, o) for i, o in ALL if o["kind"] in k8s.RAY_KINDS]


def by_id(overlay: str, ident: str) -> dict:
    objs = {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}
    return objs[ident]


def test_overlays_exist_and_render():
    assert {"dev", "prod"} <= set(OVERLAY_IDS)
    for overlay in k8s.OVERLAYS:
        kinds = {k8s.obj_id(o) for o in k8s.render_overlay(overlay)}
        assert {"Deployment/mlflow", "Service/mlflow", "StatefulSet/postgres", "Service/postgres",
                "PersistentVolumeClaim/mlflow-artifacts", "RayCluster/raylane",
                "RayService/raylane-serve"} <= kinds, overlay
        assert all(o["metadata"].get("namespace") == "raylane"
                   for o in k8s.render_overlay(overlay) if o["kind"] != "Namespace")


@pytest.mark.parametrize("ident,obj", ALL, ids=[i for i, _ in ALL])
def test_schema_valid(ident, obj):
    assert k8s.errors(obj) == [], ident


# -------------------------------------------------- the validation can fail


@pytest.mark.parametrize("ident", ["RayCluster/raylane", "RayService/raylane-serve"])
def test_crd_validation_rejects_unknown_fields_and_wrong_types(ident):
    good = by_id("dev", ident)
    assert k8s.errors(good) == []
    cluster = k8s.ray_cluster_specs(good)[0]
    path = "spec" if good["kind"] == "RayCluster" else "spec/rayClusterConfig"

    def mutated(fn):
        obj = copy.deepcopy(good)
        fn(obj, k8s.ray_cluster_specs(obj)[0])
        return k8s.errors(obj)

    # unknown field at the top of the spec, deep inside a worker pod's container, in metadata
    errs = mutated(lambda o, c: o["spec"].__setitem__("enableInTreeAutoscalling", True))
    assert any("enableInTreeAutoscalling" in e for e in errs), errs
    errs = mutated(lambda o, c: c["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
                   .__setitem__("resourcez", {}))
    assert any("resourcez" in e and e.startswith(f"{path}/workerGroupSpecs/0/template")
               for e in errs), errs
    errs = mutated(lambda o, c: o["metadata"].__setitem__("lables", {}))
    assert any("lables" in e for e in errs), errs
    # wrong types
    errs = mutated(lambda o, c: c["workerGroupSpecs"][0].__setitem__("maxReplicas", "3"))
    assert any("maxReplicas" in e and "integer" in e for e in errs), errs
    errs = mutated(lambda o, c: c["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0]
                   .__setitem__("containerPort", "gcs"))
    assert any("containerPort" in e for e in errs), errs
    # int-or-string quantities accept both, reject other types
    assert mutated(lambda o, c: c["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
                   ["resources"]["limits"].__setitem__("cpu", 1)) == []
    assert mutated(lambda o, c: c["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
                   ["resources"]["limits"].__setitem__("cpu", [1])) != []
    assert cluster  # the fixture really is a Ray cluster spec


def test_crd_validation_knows_preserve_unknown_fields():
    """`rayStartParams` is a string map: any key is fine, a non-string value is not."""
    obj = copy.deepcopy(by_id("dev", "RayCluster/raylane"))
    obj["spec"]["headGroupSpec"]["rayStartParams"]["metrics-export-port"] = "8080"
    assert k8s.errors(obj) == []
    obj["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    assert k8s.errors(obj) != []


def test_core_validation_rejects_unknown_fields_and_wrong_types():
    good = by_id("dev", "Deployment/mlflow")
    assert k8s.errors(good) == []
    obj = copy.deepcopy(good)
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "IfNotPresent"
    assert any("imagePullPolicyy" in e for e in k8s.errors(obj))
    obj = copy.deepcopy(good)
    obj["spec"]["replicas"] = "one"
    assert any("replicas" in e for e in k8s.errors(obj))
    svc = copy.deepcopy(by_id("dev", "Service/mlflow"))
    svc["spec"]["ports"][0]["port"] = "http"
    assert k8s.errors(svc) != []


# -------------------------------------------------- platform rules


def test_no_deprecated_or_alpha_kuberay_fields():
    for ident, obj in RAY:
        assert obj["apiVersion"] == "ray.io/v1", ident
        if obj["kind"] == "RayService":
            assert "serviceUnhealthySecondThreshold" not in obj["spec"], ident
            assert "deploymentUnhealthySecondThreshold" not in obj["spec"], ident


@pytest.mark.parametrize("ident,obj", ALL, ids=[i for i, _ in ALL])
def test_every_container_has_requests_and_limits(ident, obj):
    items = list(k8s.containers(obj))
    items += [(f"{ident}:autoscaler", {"resources": c["autoscalerOptions"]["resources"]})
              for c in k8s.ray_cluster_specs(obj)]
    for where, c in items:
        res = c.get("resources", {})
        for key in ("cpu", "memory"):
            req, lim = res.get("requests", {}).get(key), res.get("limits", {}).get(key)
            assert req is not None and lim is not None, f"{where}: {key} request/limit missing"
            assert k8s.quantity(req) <= k8s.quantity(lim), f"{where}: {key} request > limit"


@pytest.mark.parametrize("ident,obj", ALL, ids=[i for i, _ in ALL])
def test_non_root_security_contexts(ident, obj):
    for where, pod in k8s.pod_specs(obj):
        psc = pod.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{ident}:{where}: runAsNonRoot"
        assert psc.get("runAsUser", 0) != 0, f"{ident}:{where}: runAsUser"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{ident}:{where}"
        for c in pod.get("initContainers", []) + pod["containers"]:
            csc = c.get("securityContext", {})
            assert csc.get("allowPrivilegeEscalation") is False, f"{ident}:{where}:{c['name']}"
            assert csc.get("capabilities", {}).get("drop") == ["ALL"], f"{ident}:{where}"
            assert csc.get("runAsUser", psc["runAsUser"]) != 0
            assert not csc.get("privileged"), f"{ident}:{where}:{c['name']}"
    for cluster in k8s.ray_cluster_specs(obj):
        sc = cluster["autoscalerOptions"]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False, ident


def test_ray_pods_run_as_the_image_user():
    """The Dockerfile's USER (uid 1000, the rayproject/ray user) is what Ray pods run as."""
    for ident, obj in RAY:
        for where, pod in k8s.pod_specs(obj):
            assert pod["securityContext"]["runAsUser"] == 1000, f"{ident}:{where}"


@pytest.mark.parametrize("ident,obj", RAY, ids=[i for i, _ in RAY])
def test_every_ray_container_points_at_mlflow(ident, obj):
    for where, c in k8s.ray_containers(obj):
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env.get("MLFLOW_TRACKING_URI") == "http://mlflow:5000", where


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_mlflow_server_postgres_backend_and_proxied_artifacts(overlay):
    svc = by_id(overlay, "Service/mlflow")
    assert svc["spec"]["ports"][0]["port"] == 5000
    dep = by_id(overlay, "Deployment/mlflow")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["mlflow", "server"]
    args = c["args"]
    backend = next(a for a in args if a.startswith("--backend-store-uri="))
    assert backend.split("=", 1)[1].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in backend
    assert "--serve-artifacts" in args
    # the dev overlay patches args by index: the list must keep its shape
    assert len([a for a in args if a.startswith("--workers=")]) == 1
    assert len(args) == 6 and args[5].startswith("--workers=")
    dest = next(a for a in args if a.startswith("--artifacts-destination=")).split("=", 1)[1]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts[dest]]["persistentVolumeClaim"]["claimName"] == "mlflow-artifacts"
    # credentials only from a Secret, never literal values in the Deployment
    env = {e["name"]: e for e in c["env"]}
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert "secretKeyRef" in env[key]["valueFrom"], key
    # in-cluster clients send Host "mlflow:5000"; MLflow 3 rejects unknown Host headers
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert "mlflow:*" in allowed and "localhost:*" in allowed
    assert dep["spec"]["strategy"]["type"] == "Recreate"  # RWO volume


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_secret_references_resolve(overlay):
    objs = k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)
    secrets = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    # prod: the database and S3 Secrets are created out of band (README: Run on Kubernetes)
    external = {"mlflow-postgres", "prediction-log-s3"} if overlay == "prod" else set()
    refs = set()
    for o in objs:
        for _, c in k8s.containers(o):
            refs |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            refs |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})}
    assert refs, "expected Secret references"
    assert refs <= secrets | external, refs - secrets
    if overlay == "dev":
        assert len(secrets) == 2 and "prediction-log-s3" in secrets
        assert {s for s in secrets if s.startswith("mlflow-postgres-")}


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_replicas_share_one_prediction_log_location(overlay):
    """Every Serve pod takes the log's location (an s3:// URI, from the ConfigMap) and its S3
    credentials (from the Secret, never a literal) by name; the Serve config defers to it."""
    import yaml

    objs = {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}
    config = objs["ConfigMap/raylane-prediction-log"]["data"]
    assert config["RAYLANE_PREDICTION_LOG"].startswith("s3://")
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(config)
    service = objs["RayService/raylane-serve"]
    for where, c in k8s.ray_containers(service):
        refs = c.get("envFrom", [])
        assert {"configMapRef": {"name": "raylane-prediction-log"}} in refs, where
        assert {"secretRef": {"name": "prediction-log-s3", "optional": True}} in refs, where
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & {e["name"] for e in c["env"]}
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    (dep,) = serve["applications"][0]["deployments"]
    assert dep["user_config"]["prediction_log"]["directory"] is None  # = $RAYLANE_PREDICTION_LOG
    if overlay == "dev":  # its own S3: MinIO, signed with the same Secret, and the bucket made
        assert config["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert objs["Service/minio"]["spec"]["ports"][0]["port"] == 9000
        minio = objs["Deployment/minio"]["spec"]["template"]["spec"]["containers"][0]
        assert {e["valueFrom"]["secretKeyRef"]["name"] for e in minio["env"]} == {
            "prediction-log-s3"}
        job = objs["Job/prediction-log-bucket"]["spec"]["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": "raylane-prediction-log"}} in job["envFrom"]


def test_probes_on_mlflow_and_postgres():
    for overlay in OVERLAY_IDS:
        for ident in ("Deployment/mlflow", "StatefulSet/postgres"):
            c = by_id(overlay, ident)["spec"]["template"]["spec"]["containers"][0]
            assert "readinessProbe" in c and "livenessProbe" in c, ident


def test_ray_containers_leave_probes_to_kuberay():
    """KubeRay injects raylet/GCS (and Serve proxy) health probes only where none are set."""
    for _, obj in RAY:
        for where, c in k8s.ray_containers(obj):
            assert not {"readinessProbe", "livenessProbe"} & set(c), where


@pytest.mark.parametrize("ident,obj", RAY, ids=[i for i, _ in RAY])
def test_autoscaling_and_ray_start_params(ident, obj):
    for cluster in k8s.ray_cluster_specs(obj):
        assert cluster["rayVersion"]
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["authOptions"]["mode"] == "token"  # no open job-submission API
        opts = cluster["autoscalerOptions"]
        assert opts["upscalingMode"] in {"Conservative", "Default", "Aggressive"}
        assert 0 < opts["idleTimeoutSeconds"] <= 600
        head = cluster["headGroupSpec"]
        assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
        head_c = head["template"]["spec"]["containers"][0]
        assert k8s.quantity(head["rayStartParams"]["num-cpus"]) <= k8s.quantity(
            head_c["resources"]["limits"]["cpu"])
        assert cluster["workerGroupSpecs"], ident
        for group in cluster["workerGroupSpecs"]:
            lo, n, hi = group["minReplicas"], group.get("replicas", 0), group["maxReplicas"]
            assert 0 <= lo <= n <= hi and hi > lo, f"{ident}:{group['groupName']}"
            c = group["template"]["spec"]["containers"][0]
            # Ray's logical CPUs equal what the pod may use, so the autoscaler's arithmetic is real
            assert k8s.quantity(group["rayStartParams"]["num-cpus"]) == k8s.quantity(
                c["resources"]["limits"]["cpu"]), f"{ident}:{group['groupName']}"
            if opts.get("version") == "v2":
                assert group["template"]["spec"].get("restartPolicy") == "Never"


def test_rayservice_upgrade_strategy():
    for ident, obj in RAY:
        if obj["kind"] != "RayService":
            continue
        strategy = obj["spec"]["upgradeStrategy"]
        assert strategy["type"] == "NewCluster", ident
        # the RayService also serves Serve's port 8000 from every Ray pod
        for where, c in k8s.ray_containers(obj):
            assert 8000 in {p["containerPort"] for p in c.get("ports", [])}, where
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            assert env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1", where


def test_job_overlays_render_every_job_for_every_environment():
    assert [k8s.overlay_name(p) for p in k8s.JOB_OVERLAYS] == [f"{e}/jobs" for e in OVERLAY_IDS]
    for overlay in k8s.JOB_OVERLAYS:
        objs = k8s.render_overlay(overlay)
        assert {k8s.obj_id(o) for o in objs} == {
            "RayJob/raylane-train", "RayJob/raylane-train-on-cluster",
            "RayCronJob/raylane-retrain", "RayJob/raylane-continuous-training",
            "RayCronJob/raylane-continuous-training",
            "ConfigMap/raylane-continuous-training"}, overlay
        assert all(o["metadata"]["namespace"] == "raylane" for o in objs)
        # `kubectl create -k ... -l raylane.io/job=<job>` picks exactly one of them
        labels = [o["metadata"]["labels"]["raylane.io/job"] for o in objs]
        assert sorted(labels) == ["continuous-training", "continuous-training-config",
                                  "continuous-training-schedule", "retrain", "train",
                                  "train-on-cluster"]


def test_the_cron_job_runs_exactly_the_training_job():
    """One source for the job spec: the RayCronJob's template is the RayJob's spec, copied by
    kustomize, and the RayCronJob file holds no copy of its own."""
    source = k8s.load_file(k8s.KUBERAY / "jobs" / "raycronjob-retrain.yaml")[0]
    assert source["spec"]["jobTemplate"] == {}
    for overlay in k8s.JOB_OVERLAYS:
        objs = {k8s.obj_id(o): o for o in k8s.render_overlay(overlay)}
        assert (objs["RayCronJob/raylane-retrain"]["spec"]["jobTemplate"]
                == objs["RayJob/raylane-train"]["spec"]), overlay


def test_continuous_training_runs_the_training_cluster_with_the_log_locations():
    """The CT RayJob is the training job's cluster plus the ConfigMap in the driver's (head's)
    environment, the keys ray_jobs.continuous_training reads; its RayCronJob runs exactly it."""
    from ray_jobs.continuous_training import ENV_DEFAULTS

    source = k8s.load_file(k8s.KUBERAY / "jobs" / "raycronjob-continuous-training.yaml")[0]
    assert source["spec"]["jobTemplate"] == {}
    for overlay in k8s.JOB_OVERLAYS:
        objs = {k8s.obj_id(o): o for o in k8s.render_overlay(overlay)}
        ct = objs["RayJob/raylane-continuous-training"]["spec"]
        assert objs["RayCronJob/raylane-continuous-training"]["spec"]["jobTemplate"] == ct
        assert ct["entrypoint"].startswith("python -m ray_jobs.continuous_training --config ")
        cluster = copy.deepcopy(ct["rayClusterSpec"])
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head.pop("envFrom") == [{"configMapRef": {"name": "raylane-continuous-training"}}]
        assert cluster == objs["RayJob/raylane-train"]["spec"]["rayClusterSpec"], overlay
        data = objs["ConfigMap/raylane-continuous-training"]["data"]
        assert {names[0] for names in ENV_DEFAULTS.values()} == set(data)
        assert "://" in data["RAYLANE_PREDICTION_LOG_URI"]


def test_rayjob_rules():
    """Rules the KubeRay operator enforces on RayJobs (beyond the schema)."""
    jobs = [(i, o["spec"]) for i, o in RAY if o["kind"] == "RayJob"]
    jobs += [(i, o["spec"]["jobTemplate"]) for i, o in RAY if o["kind"] == "RayCronJob"]
    assert len(jobs) >= 3
    for ident, spec in jobs:
        assert spec["entrypoint"].startswith(("python -m ray_jobs.train_pipeline --config ",
                                              "python -m ray_jobs.continuous_training --config "))
        if spec.get("ttlSecondsAfterFinished", 0) > 0:
            assert spec.get("shutdownAfterJobFinishes") is True, ident
        if "clusterSelector" in spec:
            assert "rayClusterSpec" not in spec, ident
            assert not spec.get("shutdownAfterJobFinishes"), ident
            assert spec["clusterSelector"] == {"ray.io/cluster": "raylane"}
        else:
            assert spec["shutdownAfterJobFinishes"] is True, ident
            assert spec["ttlSecondsAfterFinished"] > 0, ident
    cron = [o for _, o in RAY if o["kind"] == "RayCronJob"]
    assert cron and all(c["spec"]["suspend"] is True for c in cron)


def test_dev_overlay_fits_a_laptop():
    objs = k8s.render_overlay(k8s.KUBERAY / "overlays" / "dev")
    requested = 0
    for o in objs:
        for _, c in k8s.containers(o):
            if c.get("image", "").startswith("raylane"):
                assert c["imagePullPolicy"] == "IfNotPresent"
                assert c["image"] == "raylane:dev"
    for o in objs:
        for cluster in k8s.ray_cluster_specs(o):
            requested += k8s.quantity(cluster["autoscalerOptions"]["resources"]["requests"]["cpu"])
            head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
            requested += k8s.quantity(head["resources"]["requests"]["cpu"])
            for g in cluster["workerGroupSpecs"]:
                c = g["template"]["spec"]["containers"][0]
                requested += g["minReplicas"] * k8s.quantity(c["resources"]["requests"]["cpu"])
                assert g["maxReplicas"] <= 4
        if o["kind"] in {"Deployment", "StatefulSet"}:
            for c in o["spec"]["template"]["spec"]["containers"]:
                requested += k8s.quantity(c["resources"]["requests"]["cpu"])
    assert requested <= 4, f"dev overlay requests {float(requested)} CPUs at its minimum size"
