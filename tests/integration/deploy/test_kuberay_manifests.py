"""Every manifest kustomize renders (every overlay, platform and jobs) is schema-valid and
follows the platform rules (resources, non-root, autoscaling, MLflow wiring, KubeRay rules).

Schemas: KubeRay v1.7.0 CRDs (vendored in kuberay/crds) with unknown fields as errors, and the
Kubernetes 1.37 OpenAPI schemas through kubernetes-validate (strict). See tests/k8s_support.py.
"""

from __future__ import annotations

import copy
import os
import re
import shlex

import pytest
from support import k8s

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
                "PodDisruptionBudget/mlflow", "ConfigMap/mlflow-artifacts", "RayCluster/raylane",
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
    env = {e["name"]: e for e in c["env"]}
    # the database URI (with its password) is in the environment, not the arguments
    assert not [a for a in args if a.startswith("--backend-store-uri")]
    backend = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert backend.startswith("postgresql+psycopg2://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@")
    assert "@postgres:5432/" in backend
    names = [e["name"] for e in c["env"]]  # $(VAR) expands only from variables defined earlier
    assert max(names.index(k) for k in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB")) < (
        names.index("MLFLOW_BACKEND_STORE_URI"))
    assert "--serve-artifacts" in args
    # MLflow's basic-auth app, its config mounted from the ConfigMap, admin from the Secret
    assert "--app-name=basic-auth" in args
    config = env["MLFLOW_AUTH_CONFIG_PATH"]["value"]
    mount = next(m for m in c["volumeMounts"] if config.startswith(m["mountPath"] + "/"))
    assert {"configMap": {"name": "mlflow-auth"}}.items() <= next(
        v for v in pod["volumes"] if v["name"] == mount["name"]).items()
    for key in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                "MLFLOW_FLASK_SERVER_SECRET_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "mlflow-admin", key
    # the dev overlay patches args by index: the list must keep its shape
    assert len([a for a in args if a.startswith("--workers=")]) == 1
    assert len(args) == 6 and args[5].startswith("--workers=")
    # credentials only from a Secret, never literal values in the Deployment
    for key in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert "secretKeyRef" in env[key]["valueFrom"], key
    # in-cluster clients send Host "mlflow:5000"; MLflow 3 rejects unknown Host headers
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    assert "mlflow:5000" in allowed and "localhost:5000" in allowed  # exact names only


def mlflow_replica_problems(objs: dict[str, dict]) -> list[str]:
    """Why the rendered MLflow would not run as two replicas behind its Service: state on a
    pod's volume, one replica, no disruption budget, migrations left to the servers, accounts
    in a per-pod store."""
    problems = []
    dep = objs["Deployment/mlflow"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    if dep["spec"].get("replicas", 1) < 2:
        problems.append(f"replicas {dep['spec'].get('replicas', 1)}")
    if dep["spec"].get("strategy", {}).get("type") == "Recreate":
        problems.append("Recreate: every update takes MLflow down")
    claims = [v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]
    if claims:
        problems.append(f"per-pod state on volumes {claims}")
    # artifacts: an S3 root from the ConfigMap, the key pair from the Secret mlflow-s3
    dest = next(a for a in c["args"] if a.startswith("--artifacts-destination=")).split("=", 1)[1]
    config = {}
    for ref in c.get("envFrom", []):
        if "configMapRef" in ref:
            config |= objs[f"ConfigMap/{ref['configMapRef']['name']}"]["data"]
    root = re.sub(r"\$\((\w+)\)", lambda m: config.get(m.group(1), m.group(0)), dest)
    if not root.startswith("s3://"):
        problems.append(f"artifacts at {root}, not on object storage")
    env = {e["name"]: e for e in c["env"]}
    creds = env.get("AWS_SHARED_CREDENTIALS_FILE", {}).get("value")
    if not creds or k8s.secret_files(pod, c).get(creds) != ("mlflow-s3", "credentials"):
        problems.append("no bucket credentials from the Secret mlflow-s3")
    # basic auth's user store on the shared PostgreSQL
    auth = objs["ConfigMap/mlflow-auth"]["data"]["basic_auth.ini"]
    if "database_uri = postgresql+psycopg2://postgres:5432/" not in auth:
        problems.append("the auth store is not on the shared PostgreSQL")
    # the migrations: an init container running raylane.deploy.mlflow_migrate
    migrate = [i for i in pod.get("initContainers", [])
               if i.get("command", [])[:3] == ["python", "-m", "raylane.deploy.mlflow_migrate"]]
    if len(migrate) != 1 or "restartPolicy" in migrate[0]:
        problems.append("no one-shot migration init container")
    budgets = [o for o in objs.values() if o["kind"] == "PodDisruptionBudget"
               and o["spec"]["selector"]["matchLabels"].items()
               <= pod_labels(dep).items()]
    if [b["spec"].get("minAvailable") for b in budgets] != [1]:
        problems.append("no PodDisruptionBudget with minAvailable 1")
    return problems


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_mlflow_runs_two_replicas_on_shared_stores(overlay):
    objs = {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}
    assert mlflow_replica_problems(objs) == []
    assert not [i for i in objs if i.startswith("PersistentVolumeClaim/mlflow")]
    root = objs["ConfigMap/mlflow-artifacts"]["data"]["MLFLOW_ARTIFACTS_DESTINATION"]
    endpoint = objs["ConfigMap/mlflow-artifacts"]["data"].get("MLFLOW_S3_ENDPOINT_URL")
    if overlay == "dev":  # the overlay's MinIO, whose bucket Job creates the bucket
        assert endpoint == "http://minio:9000" and "Service/minio" in objs
        job = objs["Job/mlflow-bucket"]["spec"]["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": "mlflow-artifacts"}} in job["envFrom"]
    else:
        assert endpoint is None and root != "s3://raylane-mlflow/artifacts"  # your bucket


def test_the_replica_check_finds_planted_mistakes():
    objs = {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / "dev")}
    assert mlflow_replica_problems(objs) == []

    def planted(change) -> list[str]:
        bad = copy.deepcopy(objs)
        change(bad)
        return mlflow_replica_problems(bad)

    def one_replica_on_a_pvc(o):  # the old layout
        spec = o["Deployment/mlflow"]["spec"]
        spec["replicas"], spec["strategy"] = 1, {"type": "Recreate"}
        pod = spec["template"]["spec"]
        pod["volumes"].append({"name": "artifacts",
                               "persistentVolumeClaim": {"claimName": "mlflow-artifacts"}})
        pod["containers"][0]["args"][4] = "--artifacts-destination=/mlflow/artifacts"

    assert len(planted(one_replica_on_a_pvc)) == 4
    assert planted(lambda o: o["ConfigMap/mlflow-auth"]["data"].update(
        {"basic_auth.ini": "[mlflow]\ndatabase_uri = sqlite:////mlflow/auth/basic_auth.db\n"}))
    assert planted(lambda o: o.pop("PodDisruptionBudget/mlflow"))
    assert planted(lambda o: o["Deployment/mlflow"]["spec"]["template"]["spec"][
        "initContainers"].pop(0))
    assert planted(lambda o: o["ConfigMap/mlflow-artifacts"]["data"].update(
        {"MLFLOW_ARTIFACTS_DESTINATION": "/mlflow/artifacts"}))


# prod: these Secrets are created out of band (README: Run on Kubernetes)
MLFLOW_ACCOUNT_SECRETS = ("mlflow-admin", "mlflow-writer", "mlflow-reader")
RAY_TOKEN_SECRETS = ("raylane-ray-token", "raylane-serve-ray-token")
PROD_EXTERNAL_SECRETS = ("mlflow-postgres", "prediction-log-s3", "mlflow-s3", *RAY_TOKEN_SECRETS,
                         "raylane-redis", *MLFLOW_ACCOUNT_SECRETS)


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_secret_references_resolve(overlay):
    objs = k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)
    secrets = {o["metadata"]["name"] for o in objs if o["kind"] == "Secret"}
    # prod: the database and S3 Secrets are created out of band (README: Run on Kubernetes)
    external = set(PROD_EXTERNAL_SECRETS) if overlay == "prod" else set()
    refs = set()
    for o in objs:
        for _, c in k8s.containers(o):
            refs |= {e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e}
            refs |= {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})}
        for _, pod in k8s.pod_specs(o):
            refs |= {v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    assert refs, "expected Secret references"
    # the Ray token Secret every cluster names (authOptions.secretName)
    refs |= {c["authOptions"]["secretName"] for o in objs for c in k8s.ray_cluster_specs(o)}
    # and the Redis password of GCS fault tolerance
    refs |= {c["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]
             for o in objs for c in k8s.ray_cluster_specs(o) if "gcsFaultToleranceOptions" in c}
    assert refs <= secrets | external, refs - secrets
    if overlay == "dev":
        assert len(secrets) == 9 and {"prediction-log-s3", "mlflow-s3", *RAY_TOKEN_SECRETS,
                                      "raylane-redis",
                                      *MLFLOW_ACCOUNT_SECRETS} <= secrets
        assert {s for s in secrets if s.startswith("mlflow-postgres-")}
    else:  # every external Secret is named in the prod overlay's instructions
        text = (k8s.KUBERAY / "overlays" / "prod" / "kustomization.yaml").read_text()
        assert "create secret generic" in text
        for name in PROD_EXTERNAL_SECRETS:
            assert re.search(rf"create secret generic ({name}|\"\$1\")", text), name
            assert name in text, name


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_replicas_share_one_prediction_log_location(overlay):
    """Every Serve pod takes the log's location (an s3:// URI, from the ConfigMap) and its S3
    credentials (a file from the Secret, never a literal or environment); the Serve config
    defers to it."""
    import yaml

    objs = {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}
    config = objs["ConfigMap/raylane-prediction-log"]["data"]
    assert config["RAYLANE_PREDICTION_LOG"].startswith("s3://")
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(config)
    service = objs["RayService/raylane-serve"]
    for where, pod, c in k8s.ray_pods(service):
        refs = c.get("envFrom", [])
        assert refs == [{"configMapRef": {"name": "raylane-prediction-log"}}], where
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert k8s.secret_files(pod, c)[env["AWS_SHARED_CREDENTIALS_FILE"]] == (
            "prediction-log-s3", "credentials"), where
        assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} & set(env)
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
            assert 0 <= lo <= n <= hi and hi >= 1, f"{ident}:{group['groupName']}"
            # only the serve group's bounds may be equal: they are computed from Serve's
            # (tests/test_kuberay_operator_rules.py), and its replicas then scale within the pods
            assert hi > lo or group["groupName"] == "serve-workers", f"{ident}:{group['groupName']}"
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
            "ConfigMap/raylane-continuous-training", "RayJob/raylane-train-scale",
            "RayJob/raylane-batch-predict", "ConfigMap/raylane-job-storage"}, overlay
        assert all(o["metadata"]["namespace"] == "raylane" for o in objs)
        # `kubectl create -k ... -l raylane.io/job=<job>` picks exactly one of them
        labels = [o["metadata"]["labels"]["raylane.io/job"] for o in objs]
        assert sorted(labels) == ["batch-predict", "continuous-training",
                                  "continuous-training-config",
                                  "continuous-training-schedule", "job-storage", "retrain",
                                  "train", "train-on-cluster", "train-scale"]


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
        assert ct["entrypoint"].startswith(
            "python -m raylane.deploy.lease continuous-training -- "
            "python -m ray_jobs.continuous_training --config ")
        cluster = copy.deepcopy(ct["rayClusterSpec"])
        head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
        assert head["envFrom"].pop() == {"configMapRef": {"name": "raylane-continuous-training"}}
        assert cluster == objs["RayJob/raylane-train"]["spec"]["rayClusterSpec"], overlay
        data = objs["ConfigMap/raylane-continuous-training"]["data"]
        assert {names[0] for option, names in ENV_DEFAULTS.items()
                if option != "predictions"} == set(data)


def test_every_job_pod_reads_the_prediction_log_where_the_service_writes_it():
    """The monitor and CT read the log with Ray Data on every node: each job pod (head and
    workers) gets the ConfigMap and keys the RayService's pods log with."""
    from ray_jobs.continuous_training import ENV_DEFAULTS

    platform = k8s.render_overlay(k8s.OVERLAYS[0])
    service = next(o for o in platform if o["kind"] == "RayService")
    service_env = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
        "containers"][0]["envFrom"]
    log_map = next(o for o in platform if o["kind"] == "ConfigMap"
                   and o["metadata"]["name"] == "raylane-prediction-log")
    assert ENV_DEFAULTS["predictions"][0] in log_map["data"]
    for overlay in k8s.JOB_OVERLAYS:
        objs = {k8s.obj_id(o): o for o in k8s.render_overlay(overlay)}
        for job in ("RayJob/raylane-train", "RayJob/raylane-continuous-training",
                    "RayJob/raylane-train-scale", "RayJob/raylane-batch-predict"):
            cluster = objs[job]["spec"]["rayClusterSpec"]
            pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
            for pod in pods:
                env_from = pod["template"]["spec"]["containers"][0]["envFrom"]
                assert env_from[:1] == service_env[:1], (overlay, job)


def test_rayjob_rules():
    """Rules the KubeRay operator enforces on RayJobs (beyond the schema)."""
    jobs = [(i, o["spec"]) for i, o in RAY if o["kind"] == "RayJob"]
    jobs += [(i, o["spec"]["jobTemplate"]) for i, o in RAY if o["kind"] == "RayCronJob"]
    assert len(jobs) >= 3
    for ident, spec in jobs:
        assert spec["entrypoint"].startswith((
            "python -m ray_jobs.train_pipeline --config ",
            "python -m raylane.deploy.lease continuous-training -- "
            "python -m ray_jobs.continuous_training --config ",
            "python -m ray_jobs.batch_predict --model-uri "))
        assert k8s.rayjob_operator_errors(spec) == [], ident
        if "clusterSelector" in spec:
            assert "rayClusterSpec" not in spec, ident
            assert spec["clusterSelector"] == {"ray.io/cluster": "raylane"}


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


# -------------------------------------------------- authentication and network policies


def _pod_labels(obj: dict) -> list[tuple[str, dict]]:
    """(where, labels) of every pod template in ``obj``, as the manifests set them."""
    out = []
    for cluster in k8s.ray_cluster_specs(obj):
        groups = [("head", cluster["headGroupSpec"])] + [
            (g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
        for name, group in groups:
            labels = group["template"].get("metadata", {}).get("labels", {})
            out.append((f"{k8s.obj_id(obj)}:{name}", labels))
    if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
        labels = obj["spec"]["template"].get("metadata", {}).get("labels", {})
        out.append((f"{k8s.obj_id(obj)}:pod", labels))
    spec = obj.get("spec", {})
    job = spec.get("jobTemplate", spec) if obj["kind"] == "RayCronJob" else spec
    if obj["kind"] in {"RayJob", "RayCronJob"} and "submitterPodTemplate" in job:
        labels = job["submitterPodTemplate"].get("metadata", {}).get("labels", {})
        out.append((f"{k8s.obj_id(obj)}:submitter", labels))
    return out


def _selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # matchExpressions: not used here
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _platform(overlay: str) -> tuple[list[dict], list[tuple[str, dict]]]:
    """An overlay's objects with its jobs' objects, and the labels of all their pods."""
    objs = list(k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay))
    objs += k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay / "jobs")
    return objs, [p for o in objs for p in _pod_labels(o)]


def _policies(objs) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "NetworkPolicy"}


def _matched(selector: dict, pods) -> set[str]:
    return {where.split(":")[0] for where, labels in pods if _selects(selector, labels)}


RAY_POD_OWNERS = {"RayCluster/raylane", "RayService/raylane-serve", "RayJob/raylane-train",
                  "RayJob/raylane-continuous-training", "RayCronJob/raylane-retrain",
                  "RayCronJob/raylane-continuous-training", "RayJob/raylane-train-scale",
                  "RayJob/raylane-batch-predict"}
CONSOLE = {"matchLabels": {"app.kubernetes.io/name": "raylane-console"}}


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_network_policies_select_pods_that_exist(overlay):
    objs, pods = _platform(overlay)
    policies = _policies(objs)
    extra = ({"ray-to-minio", "minio", "mlflow-to-minio", "minio-from-mlflow"}
             if overlay == "dev" else set())
    assert set(policies) == {"postgres", "mlflow", "ray", "serve-http", "console",
                             "redis"} | extra
    # labels of pods that are not the manifests' (you set them on your own pods)
    outside = {"raylane.io/console-client"}
    for name, spec in policies.items():
        assert _matched(spec["podSelector"], pods), f"{name}: selects no pod"
        for rule in spec.get("ingress", []):
            for peer in rule.get("from", []):
                if ("namespaceSelector" in peer or peer["podSelector"] == {}
                        or set(peer["podSelector"]["matchLabels"]) <= outside):
                    continue  # other namespaces (operator, Prometheus), your own pods
                assert _matched(peer["podSelector"], pods), f"{name}: {peer} matches no pod"
        for rule in spec.get("egress", []):
            for peer in rule.get("to", []):
                if "ipBlock" in peer or "namespaceSelector" in peer:
                    continue  # outside the cluster, other namespaces (Prometheus, Grafana)
                assert _matched(peer["podSelector"], pods), f"{name}: {peer} matches no pod"
    # every Ray pod (head and workers, every kind) is under the Ray policy
    ray_pods = [(w, labels) for w, labels in pods if w.split(":")[0] in RAY_POD_OWNERS
                and not w.endswith(":submitter")]
    assert {w.split(":")[0] for w, _ in ray_pods} == RAY_POD_OWNERS
    assert all(_selects(policies["ray"]["podSelector"], labels) for _, labels in ray_pods)


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_postgres_only_client_is_mlflow(overlay):
    objs, pods = _platform(overlay)
    policies = _policies(objs)
    pg = policies["postgres"]
    assert _matched(pg["podSelector"], pods) == {"StatefulSet/postgres"}
    assert set(pg["policyTypes"]) == {"Ingress", "Egress"}
    (rule,) = pg["ingress"]
    assert [p["port"] for p in rule["ports"]] == [5432]
    assert {o for peer in rule["from"] for o in _matched(peer["podSelector"], pods)} == {
        "Deployment/mlflow"}
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # this namespace only
    # no other policy opens PostgreSQL's pods (policies add up)
    pg_labels = next(labels for w, labels in pods if w.startswith("StatefulSet/postgres"))
    assert [n for n, s in policies.items() if _selects(s["podSelector"], pg_labels)] == [
        "postgres"]
    # and its egress is DNS only
    assert [p["port"] for r in pg["egress"] for p in r["ports"]] == [53, 53]
    assert all("to" not in r for r in pg["egress"])


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_mlflow_admits_ray_pods_and_the_console_only(overlay):
    objs, pods = _platform(overlay)
    policies = _policies(objs)
    ml = policies["mlflow"]
    assert _matched(ml["podSelector"], pods) == {"Deployment/mlflow"}
    (rule,) = ml["ingress"]
    assert [p["port"] for p in rule["ports"]] == [5000]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])
    assert CONSOLE in [p["podSelector"] for p in rule["from"]]
    clients = {o for peer in rule["from"] for o in _matched(peer["podSelector"], pods)}
    assert clients == RAY_POD_OWNERS | {"Deployment/raylane-console"}, clients
    # MLflow itself reaches PostgreSQL, DNS and object storage (HTTPS outside the metadata range)
    assert {k8s.obj_id(o) for r in ml["egress"] for peer in r.get("to", []) if "podSelector" in peer
            for o in objs if any(_selects(peer["podSelector"], lab) for _, lab in _pod_labels(o))
            } == {"StatefulSet/postgres"}
    blocks = [(peer["ipBlock"], [p["port"] for p in r["ports"]])
              for r in ml["egress"] for peer in r.get("to", []) if "ipBlock" in peer]
    assert blocks == [({"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}, [443])]
    if overlay == "dev":  # and its MinIO, which admits it
        to_minio = _policies(objs)["mlflow-to-minio"]
        assert _matched(to_minio["podSelector"], pods) == {"Deployment/mlflow"}
        assert [p["port"] for r in to_minio["egress"] for p in r["ports"]] == [9000]


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_serve_http_stays_open(overlay):
    """Who reaches the Ray ports: tests/test_kuberay_isolation.py. Serve's port 8000 is open to
    any source, as the Service exposes it."""
    objs, pods = _platform(overlay)
    serve = _policies(objs)["serve-http"]
    assert _matched(serve["podSelector"], pods) == {"RayService/raylane-serve"}
    (rule,) = serve["ingress"]
    assert "from" not in rule and [p["port"] for p in rule["ports"]] == [8000]


def _secret_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}


MLFLOW_CREDENTIALS = "/home/ray/.mlflow/credentials"  # MLflow's client reads ~/.mlflow/credentials


def test_serving_reads_with_the_reader_account_and_jobs_write_with_the_writer():
    seen = set()
    for _, obj in RAY:
        want = "mlflow-reader" if obj["kind"] == "RayService" else "mlflow-writer"
        for where, pod, c in k8s.ray_pods(obj):
            assert k8s.secret_files(pod, c)[MLFLOW_CREDENTIALS] == (want, "credentials"), where
            assert not _secret_env(c), where  # no credential in the environment
            seen.add(want)
    assert seen == {"mlflow-reader", "mlflow-writer"}
    for _, obj in ALL:  # no account password as a literal anywhere
        for where, c in k8s.containers(obj):
            literal = {e["name"] for e in c.get("env", []) if "value" in e}
            assert not literal & {"MLFLOW_TRACKING_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD",
                                  "POSTGRES_PASSWORD"}, where


def _accounts_sidecar(overlay: str) -> dict:
    pod = by_id(overlay, "Deployment/mlflow")["spec"]["template"]["spec"]
    return next(c for c in pod["initContainers"] if c["name"] == "mlflow-accounts")


def test_the_account_sidecar_runs_the_library_with_secrets_only():
    """The accounts are made by a native sidecar of the MLflow pod (never a Job: its template is
    immutable, and a kept Job failed the next apply with a new image), against that pod's own
    server, and kept up to date with the Secrets."""
    from raylane.deploy import mlflow_accounts

    for overlay in OVERLAY_IDS:
        c = _accounts_sidecar(overlay)
        assert c["restartPolicy"] == "Always"  # a sidecar: it runs beside the server
        assert c["command"][:3] == ["python", "-m", mlflow_accounts.__name__]
        assert c["command"][3:5] == ["--every-s", "60"]
        refs = _secret_env(c)
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
        assert refs["MLFLOW_TRACKING_USERNAME"] == refs["MLFLOW_TRACKING_PASSWORD"] == (
            "mlflow-admin")
        pod = by_id(overlay, "Deployment/mlflow")["spec"]["template"]["spec"]
        files = k8s.secret_files(pod, c)
        assert files[env["RAYLANE_MLFLOW_WRITER_CREDENTIALS"]] == ("mlflow-writer", "credentials")
        assert files[env["RAYLANE_MLFLOW_READER_CREDENTIALS"]] == ("mlflow-reader", "credentials")


_URI_WITH_CREDENTIALS = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def command_line_leaks(obj: dict, secret_values: set[str]) -> list[str]:
    """Passwords or credentialed URIs on a command line: container command/args, exec probes,
    a RayJob's entrypoint, rayStartParams."""
    lines = []
    for where, c in k8s.containers(obj):
        lines += [(where, str(a)) for a in c.get("command", []) + c.get("args", [])]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            lines += [(where, str(a)) for a in c.get(probe, {}).get("exec", {}).get("command", [])]
    spec = obj.get("spec", {})
    job = spec.get("jobTemplate", spec) if obj["kind"] == "RayCronJob" else spec
    if obj["kind"] in {"RayJob", "RayCronJob"}:
        lines.append((k8s.obj_id(obj), job.get("entrypoint", "")))
    for cluster in k8s.ray_cluster_specs(obj):
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            lines += [(k8s.obj_id(obj), f"{k}={v}") for k, v in group["rayStartParams"].items()]
    leaks = []
    for where, text in lines:
        if (_URI_WITH_CREDENTIALS.search(text) or "password" in text.lower()
                or any(v and v in text for v in secret_values)):
            leaks.append(f"{where}: {text}")
    return leaks


def _secret_values() -> set[str]:
    """Passwords and keys of the Secrets the overlays render (dev's)."""
    import base64

    values = set()
    for _, obj in ALL:  # the secret parts (not user or database names) of the rendered Secrets
        if obj["kind"] == "Secret":
            items = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
            items |= obj.get("stringData", {})
            values |= {v for k, v in items.items() if re.search("PASSWORD|SECRET", k)}
            # credentials files: their password/secret lines' values
            for text in items.values():
                values |= set(re.findall(r"(?:password|secret_access_key) = (\S+)", text))
    return values


@pytest.mark.parametrize("ident,obj", ALL, ids=[i for i, _ in ALL])
def test_no_password_on_a_command_line(ident, obj):
    assert command_line_leaks(obj, _secret_values()) == [], ident


def test_the_command_line_scan_finds_leaks():
    secrets = _secret_values()
    assert "mlflow-dev-only" in secrets  # the dev database password is one of them
    assert "trainer-dev-only" in secrets  # and the writer's, from its credentials file
    dep = copy.deepcopy(by_id("dev", "Deployment/mlflow"))
    assert command_line_leaks(dep, secrets) == []
    dep["spec"]["template"]["spec"]["containers"][0]["args"].append(
        "--backend-store-uri=postgresql://mlflow:s3cret@postgres:5432/mlflow")
    assert command_line_leaks(dep, secrets)
    dep = copy.deepcopy(by_id("dev", "Deployment/mlflow"))
    dep["spec"]["template"]["spec"]["initContainers"][-1]["command"] += ["--pw", "trainer-dev-only"]
    assert command_line_leaks(dep, secrets)


# ------------------------------ data-parallel training and batch scoring on object storage

MIN_TRAIN_WORKER_MEMORY = k8s.quantity("2Gi")  # docs/scale.md: the credit-sized trial's worker


def _head_env(cluster: dict, objs: dict[str, dict]) -> dict[str, str]:
    """The head container's environment: its ConfigMaps (``envFrom``), then literal ``env``."""
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for ref in head.get("envFrom", []):
        env.update(objs[f"ConfigMap/{ref['configMapRef']['name']}"]["data"])
    env.update({e["name"]: e["value"] for e in head.get("env", []) if "value" in e})
    return env


def _argv(entrypoint: str, env: dict[str, str]) -> list[str]:
    """The entrypoint as the driver's shell runs it (Ray's job supervisor: ``shell=True``),
    ``$VAR`` from the head's environment; a variable it does not have is an error."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            raise KeyError(f"entrypoint: ${name} is not in the head's environment")
        return env[name]

    return shlex.split(re.sub(r"\$\{(\w+)\}|\$(\w+)", value, entrypoint))


def _job_objects(overlay: str) -> dict[str, dict]:
    objs, _ = _platform(overlay)
    return {k8s.obj_id(o): o for o in objs}


def scale_job_errors(spec: dict, objs: dict[str, dict]) -> list[str]:
    """What is inconsistent between the data-parallel RayJob's config (its entrypoint's
    ``--config`` and ``--set``) and its cluster: the worker group must hold one trial's Ray Train
    workers (``workers_per_trial x cpus_per_trial`` CPUs and the trial function's) at its
    minimum size, across ``workers_per_trial`` pods for a SPREAD placement, with at least
    MIN_TRAIN_WORKER_MEMORY per Train worker; Tune's storage on object storage the job may
    write."""
    from support.environ import restored_environ
    from support.multinode import chdir

    from raylane.config import ConfigError, load_config
    from raylane.training.trial_resources import DRIVER_CPU

    errs: list[str] = []
    cluster = spec["rayClusterSpec"]
    env = _head_env(cluster, objs)
    try:
        argv = _argv(spec["entrypoint"], env)
    except KeyError as exc:
        return [str(exc)]
    if argv[:5] != ["python", "-m", "ray_jobs.train_pipeline", "--config", argv[4]]:
        return [f"entrypoint: not the training job: {argv}"]
    overrides = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    with restored_environ(), chdir(k8s.REPO):
        os.environ.pop("RAYLANE_ALLOWED_LOCATIONS", None)
        os.environ.update({k: v for k, v in env.items() if k.startswith("RAYLANE_")})
        try:
            config = load_config(k8s.REPO / argv[4], overrides)
        except ConfigError as exc:
            return [f"config: {exc}"]
    tc = config.tune
    if tc.workers_per_trial < 2:
        errs.append(f"tune.workers_per_trial is {tc.workers_per_trial}: not data-parallel")
    if not tc.storage_path.startswith("s3://"):
        errs.append(f"tune.storage_path {tc.storage_path!r}: not on object storage")
    (group,) = cluster["workerGroupSpecs"]
    c = group["template"]["spec"]["containers"][0]
    cpus = k8s.quantity(group["rayStartParams"]["num-cpus"])
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    if k8s.quantity(requests["cpu"]) != cpus or k8s.quantity(limits["cpu"]) != cpus:
        errs.append(f"worker cpu requests/limits {requests['cpu']}/{limits['cpu']} != "
                    f"num-cpus {cpus}")
    if k8s.quantity(requests["memory"]) != k8s.quantity(limits["memory"]):
        errs.append("worker memory requests != limits (a Train worker must not be evicted)")
    per_pod = int(cpus // k8s.quantity(str(tc.cpus_per_trial)))
    if per_pod < 1:
        errs.append(f"a worker pod ({cpus} CPUs) cannot hold one Train worker of "
                    f"{tc.cpus_per_trial} CPUs")
        return errs
    memory = k8s.quantity(requests["memory"]) / per_pod
    if memory < MIN_TRAIN_WORKER_MEMORY:
        errs.append(f"{per_pod} Train workers per pod get {float(memory) / 2**30:.2f}Gi each, "
                    f"under {float(MIN_TRAIN_WORKER_MEMORY) / 2**30:g}Gi")
    trial = tc.workers_per_trial * k8s.quantity(str(tc.cpus_per_trial)) + k8s.quantity(
        str(DRIVER_CPU))
    if group["minReplicas"] * cpus < trial:
        errs.append(f"minReplicas {group['minReplicas']} x {cpus} CPUs cannot hold one trial "
                    f"({float(trial)} CPUs)")
    if tc.placement_strategy in ("SPREAD", "STRICT_SPREAD") and (
            group["minReplicas"] < tc.workers_per_trial):
        errs.append(f"{tc.placement_strategy}: minReplicas {group['minReplicas']} < "
                    f"workers_per_trial {tc.workers_per_trial} (workers cannot spread)")
    if tc.max_concurrent_trials and group["maxReplicas"] * cpus < tc.max_concurrent_trials * (
            trial):
        errs.append(f"maxReplicas {group['maxReplicas']} x {cpus} CPUs cannot hold "
                    f"max_concurrent_trials {tc.max_concurrent_trials}")
    return errs


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_the_data_parallel_job_s_workers_are_sized_for_its_trials(overlay):
    objs = _job_objects(overlay)
    spec = objs["RayJob/raylane-train-scale"]["spec"]
    assert scale_job_errors(spec, objs) == []
    # its own cluster: the training job's, but the worker group and the storage ConfigMap
    cluster, train = (copy.deepcopy(spec["rayClusterSpec"]),
                      objs["RayJob/raylane-train"]["spec"]["rayClusterSpec"])
    for pod in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        env_from = pod["template"]["spec"]["containers"][0]["envFrom"]
        assert env_from.pop() == {"configMapRef": {"name": "raylane-job-storage"}}
    assert {k: v for k, v in cluster.items() if k != "workerGroupSpecs"} == {
        k: v for k, v in train.items() if k != "workerGroupSpecs"}


@pytest.mark.parametrize(("mistake", "message"), [
    (lambda s, g, c: g.update(minReplicas=1), "minReplicas 1"),
    (lambda s, g, c: c["resources"]["requests"].update(memory="2Gi"), "memory requests != "),
    (lambda s, g, c: [c["resources"][k].update(memory="3Gi") for k in ("requests", "limits")],
     "1.50Gi each"),
    (lambda s, g, c: g["rayStartParams"].update({"num-cpus": "1"}), "!= num-cpus 1"),
    (lambda s, g, c: s.update(entrypoint=s["entrypoint"] + " --set tune.workers_per_trial=3"),
     "workers_per_trial 3"),
    (lambda s, g, c: s.update(entrypoint=s["entrypoint"] + " --set tune.storage_path=ray_results"),
     "not on object storage"),
    (lambda s, g, c: s.update(entrypoint=s["entrypoint"].replace("$RAYLANE_JOB_STORAGE",
                                                                 "$RAYLANE_NO_SUCH")),
     r"\$RAYLANE_NO_SUCH is not in the head's environment"),
    (lambda s, g, c: s.update(entrypoint=s["entrypoint"].replace(
        "$RAYLANE_JOB_STORAGE", "s3://elsewhere")), "not under an allowed location"),
])
def test_the_sizing_check_finds_planted_mistakes(mistake, message):
    objs = _job_objects("dev")
    spec = copy.deepcopy(objs["RayJob/raylane-train-scale"]["spec"])
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    mistake(spec, group, group["template"]["spec"]["containers"][0])
    errs = scale_job_errors(spec, objs)
    assert any(re.search(message, e) for e in errs), errs


@pytest.mark.parametrize("overlay", OVERLAY_IDS)
def test_batch_predict_scores_the_champion_from_and_to_object_storage(overlay):
    """The batch-scoring RayJob runs on the training job's cluster plus the job storage
    ConfigMap; its input and output are object storage the operator allows; every pod signs
    with the prediction log's S3 Secret (a file) and, in dev, reaches the MinIO that creates
    the jobs' bucket."""
    from ray_jobs.batch_predict import build_parser
    from raylane.locations import check_location, policy_from_env

    objs = _job_objects(overlay)
    spec = objs["RayJob/raylane-batch-predict"]["spec"]
    assert k8s.rayjob_operator_errors(spec) == []
    cluster = copy.deepcopy(spec["rayClusterSpec"])
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["envFrom"].pop() == {"configMapRef": {"name": "raylane-job-storage"}}
    assert cluster == objs["RayJob/raylane-train"]["spec"]["rayClusterSpec"]

    env = _head_env(spec["rayClusterSpec"], objs)
    argv = _argv(spec["entrypoint"], env)
    assert argv[:3] == ["python", "-m", "ray_jobs.batch_predict"]
    args = build_parser().parse_args(argv[3:])
    assert args.model_uri == "models:/credit@champion"
    policy = policy_from_env({"RAYLANE_ALLOWED_LOCATIONS": env["RAYLANE_ALLOWED_LOCATIONS"]})
    for field, uri in [*(("--input", i) for i in args.input), ("--output", args.output)]:
        assert uri.startswith(env["RAYLANE_JOB_STORAGE"] + "/"), (field, uri)
        check_location(field, uri, policy)
    assert args.output not in args.input

    for where, pod, c in k8s.ray_pods(objs["RayJob/raylane-batch-predict"]):
        c_env = {e["name"]: e.get("value") for e in c["env"]}
        assert k8s.secret_files(pod, c)[c_env["AWS_SHARED_CREDENTIALS_FILE"]] == (
            "prediction-log-s3", "credentials"), where
    if overlay == "dev":
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        job = objs["Job/prediction-log-bucket"]["spec"]["template"]["spec"]["containers"][0]
        job_env = {e["name"]: e.get("value") for e in job["env"]}
        assert job_env["RAYLANE_JOB_STORAGE"] == env["RAYLANE_JOB_STORAGE"]
        assert 'os.environ["RAYLANE_JOB_STORAGE"]' in job["command"][-1]
