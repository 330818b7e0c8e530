"""The console on Kubernetes: one Deployment + Service in the base, wired to the services the
other manifests define (names and ports cross-checked), read-only MLflow account, health probes
on Streamlit's /_stcore/health, the image carries what it runs. (Schema validity, resources,
security contexts and the command-line scan: tests/test_kuberay_manifests.py, for every object.)
"""

from __future__ import annotations

import pytest
import yaml
from support import k8s

from raylane.console.settings import ConsoleSettings

OVERLAYS = [p.name for p in k8s.OVERLAYS]


def objects(overlay: str) -> dict[str, dict]:
    return {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}


def service_url(svc: dict, port_name: str | None = None) -> str:
    (port,) = [p for p in svc["spec"]["ports"] if port_name in (None, p.get("name"))]
    return f"http://{svc['metadata']['name']}:{port['port']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_console_is_wired_to_the_platforms_services(overlay):
    objs = objects(overlay)
    dep = objs["Deployment/raylane-console"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"]
               if "secretKeyRef" in e.get("valueFrom", {})}
    # the model service: the serve Service KubeRay makes for the RayService, Serve's port
    rayservice = objs["RayService/raylane-serve"]
    serve_port = yaml.safe_load(rayservice["spec"]["serveConfigV2"])["http_options"]["port"]
    assert env["RAYLANE_SERVE_URL"] == (
        f"http://{rayservice['metadata']['name']}-serve-svc:{serve_port}")
    # MLflow: its Service, with the read-only account (a file: ~/.mlflow/credentials)
    assert env["MLFLOW_TRACKING_URI"] == service_url(objs["Service/mlflow"])
    files = k8s.secret_files(pod["spec"], c)
    assert files["/home/ray/.mlflow/credentials"] == ("mlflow-reader", "credentials")
    assert not secrets  # no credential in the environment
    # Ray: the serving cluster's dashboard (Serve REST API) with that cluster's token; the
    # jobs cluster through RayJobs on the Kubernetes API (its ServiceAccount), never its token
    cluster = objs["RayCluster/raylane"]
    head_ports = {p["name"]: p["containerPort"] for p in
                  cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]}
    assert "RAY_ADDRESS" not in env
    assert env["RAYLANE_SERVE_DASHBOARD"] == (
        f"http://{rayservice['metadata']['name']}-head-svc:{head_ports['dashboard']}")
    assert files[env["RAY_AUTH_TOKEN_PATH"]] == (
        rayservice["spec"]["rayClusterConfig"]["authOptions"]["secretName"], "auth_token")
    assert rayservice["spec"]["rayClusterConfig"]["authOptions"]["mode"] == "token"
    jobs_token = cluster["spec"]["authOptions"]["secretName"]
    assert jobs_token not in {name for name, _ in files.values()}
    assert jobs_token not in yaml.safe_dump(pod)
    # Metrics: the Prometheus the Ray heads' dashboards read
    head_env = {e["name"]: e.get("value") for e in
                cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAYLANE_PROMETHEUS_URL"] == head_env["RAY_PROMETHEUS_HOST"]
    # what the console reads them as
    settings = ConsoleSettings.from_env({k: v for k, v in env.items() if v is not None})
    assert settings.serve_url == env["RAYLANE_SERVE_URL"]
    assert settings.prometheus_url == env["RAYLANE_PROMETHEUS_URL"]
    assert settings.job_backend == "kubernetes"
    assert settings.job_cluster == cluster["metadata"]["name"]
    assert str(settings.serve_config).endswith("serve/config.yaml")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_console_runs_streamlit_with_probes_and_its_service(overlay):
    objs = objects(overlay)
    dep = objs["Deployment/raylane-console"]
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["streamlit", "run", "console/app.py"]
    assert (k8s.REPO / "console" / "app.py").is_file()
    assert "--server.port=8501" in c["args"] and "--server.headless=true" in c["args"]
    assert c["ports"] == [{"name": "http", "containerPort": 8501}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/_stcore/health", "port": "http"}, probe
    # the image is the project image, as every other pod's in this overlay
    mlflow_image = objs["Deployment/mlflow"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert c["image"] == mlflow_image
    # the Service selects exactly the console's pods, on its port
    svc = objs["Service/raylane-console"]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"] == [{"name": "http", "port": 8501, "targetPort": "http"}]
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"  # reached by port-forward
    # the label MLflow's NetworkPolicy admits
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "raylane-console"


def test_the_image_carries_the_console():
    dockerfile = (k8s.REPO / "Dockerfile").read_text()
    assert "COPY --chown=1000:100 console ./console" in dockerfile
    assert '".[console]"' in dockerfile and "streamlit" in dockerfile


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_console_pod_caps_uploads_as_the_page_does(overlay):
    from raylane.console.scoring import MAX_UPLOAD_MB

    (c,) = objects(overlay)["Deployment/raylane-console"]["spec"]["template"]["spec"]["containers"]
    assert f"--server.maxUploadSize={MAX_UPLOAD_MB}" in c["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_consoles_role_creates_and_reads_rayjobs_and_nothing_else(overlay):
    """RBAC: one Role, bound to the console's ServiceAccount only, in the platform's namespace;
    create/get/list/watch of ray.io rayjobs, no other verb, resource or API group, no
    ClusterRole; the Deployment runs as that account with its token mounted."""
    objs = objects(overlay)
    assert not [i for i in objs if i.split("/")[0] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {i: o for i, o in objs.items() if o["kind"] == "Role"}
    bindings = {i: o for i, o in objs.items() if o["kind"] == "RoleBinding"}
    assert list(roles) == ["Role/raylane-console-rayjobs"]
    (role,) = roles.values()
    assert role["rules"] == [{"apiGroups": ["ray.io"], "resources": ["rayjobs"],
                              "verbs": ["create", "get", "list", "watch"]}]
    assert "resourceNames" not in role["rules"][0]
    (binding,) = bindings.values()
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    namespace = objs["RayCluster/raylane"]["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "raylane-console",
                                    "namespace": namespace}]
    assert {o["metadata"]["namespace"] for o in (
        role, binding, objs["ServiceAccount/raylane-console"])} == {namespace}
    # the account mounts no token by default; the console's pod opts in
    assert objs["ServiceAccount/raylane-console"]["automountServiceAccountToken"] is False
    pod = objs["Deployment/raylane-console"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "raylane-console"
    assert pod["automountServiceAccountToken"] is True
    # the only other pods running as this account: none
    for ident, obj in objs.items():
        for where, spec in k8s.pod_specs(obj):
            if ident != "Deployment/raylane-console":
                assert spec.get("serviceAccountName") != "raylane-console", (ident, where)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_role_grants_what_the_console_calls(overlay):
    """The console's calls (raylane/console/rayjobs.py) are the Role's verbs on its resource."""
    from raylane.console import rayjobs

    (rule,) = objects(overlay)["Role/raylane-console-rayjobs"]["rules"]
    assert (rule["apiGroups"], rule["resources"]) == ([rayjobs.GROUP], [rayjobs.PLURAL])
    calls = {"create": rayjobs.KubeApi.create, "get": rayjobs.KubeApi.get,
             "list": rayjobs.KubeApi.list}
    assert set(calls) <= set(rule["verbs"]) <= {*calls, "watch"}
