"""Cross-checks between the manifests and the rest of the repo: the RayService carries exactly
serve/config.yaml, the Serve app imports, Serve's replicas fit the worker pods, the RayJob's
entrypoint and config exist, and images and Ray versions agree everywhere."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import tomllib
from fractions import Fraction
from pathlib import Path

import pytest
import yaml
from support import k8s

from raylane.deploy import render

REPO = k8s.REPO
SERVE_CONFIG = REPO / "serve" / "config.yaml"
RAYSERVICE = REPO / "kuberay" / "base" / "rayservice.yaml"
needs_serve_config = pytest.mark.skipif(
    not SERVE_CONFIG.exists(), reason="serve/config.yaml does not exist yet (serving issue)")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def ray_pin() -> str:
    deps = pyproject()["project"]["dependencies"]
    pin = next(d for d in deps if re.match(r"ray(\[|==)", d))
    return pin.split("==", 1)[1].strip()


def serve_config() -> dict:
    return yaml.safe_load(SERVE_CONFIG.read_text())


# ------------------------------------------------------------------ serveConfigV2


@needs_serve_config
def test_rayservice_manifest_is_generated_from_serve_config():
    assert render.render(SERVE_CONFIG, RAYSERVICE) == RAYSERVICE.read_text(), (
        "kuberay/base/rayservice.yaml is out of date: run `python -m raylane.deploy.render`")
    assert render.main(["--check", "--serve-config", str(SERVE_CONFIG),
                        "--manifest", str(RAYSERVICE)]) == 0


@needs_serve_config
@pytest.mark.parametrize("overlay", [p.name for p in k8s.OVERLAYS])
def test_rendered_overlays_carry_the_exact_serve_config(overlay):
    objs = k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)
    rs = next(o for o in objs if o["kind"] == "RayService")
    assert rs["spec"]["serveConfigV2"] == SERVE_CONFIG.read_text()


@pytest.mark.parametrize("text", [
    "applications:\n  - name: a\n    import_path: m:app\n",
    "applications:\n  - name: a\n\n    import_path: m:app",            # no final newline
    "applications:\n  - name: a\n    import_path: m:app\n\n\n",        # extra blank lines
    "# comment: with colon\napplications: []\n",
    "  applications:\n    - name: indented\n",                          # leading indentation
    "applications:\n- name: 'quote' # x\n  args: {a: \"|\"}\n",
])
def test_render_block_round_trips(tmp_path, text):
    manifest = tmp_path / "rs.yaml"
    manifest.write_text(RAYSERVICE.read_text())
    new = render.replace_serve_config(manifest.read_text(), text)
    rs = yaml.safe_load(new)
    assert rs["spec"]["serveConfigV2"] == text
    assert rs["spec"]["rayClusterConfig"] == yaml.safe_load(RAYSERVICE.read_text())[
        "spec"]["rayClusterConfig"]
    # idempotent: rendering the rendered manifest again changes nothing
    assert render.replace_serve_config(new, text) == new


def test_render_check_detects_drift(tmp_path, capsys):
    serve = tmp_path / "config.yaml"
    serve.write_text("applications:\n  - name: x\n    import_path: a.b:c\n")
    manifest = tmp_path / "rayservice.yaml"
    manifest.write_text(RAYSERVICE.read_text())
    args = ["--serve-config", str(serve), "--manifest", str(manifest)]
    if render.render(serve, manifest) != manifest.read_text():
        assert render.main([*args, "--check"]) == 1
    assert render.main(args) == 0
    assert render.main([*args, "--check"]) == 0
    serve.write_text(serve.read_text() + "    route_prefix: /x\n")
    assert render.main([*args, "--check"]) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("not_a_serve_config: 1\n")
    assert render.main(["--serve-config", str(bad), "--manifest", str(manifest)]) == 2


# ------------------------------------------------------------------ Serve app


@needs_serve_config
def test_serve_import_paths_import():
    apps = serve_config()["applications"]
    assert apps
    for app in apps:
        path = app["import_path"]
        module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
        mod = importlib.import_module(module)
        assert hasattr(mod, attr), f"{path}: {module} has no {attr}"


RAY_MEMORY_SHARE = Fraction(7, 10)


def _replica_cpus(dep: dict) -> Fraction:
    opts = dep.get("ray_actor_options") or {}
    if dep.get("placement_group_bundles"):
        return sum(Fraction(str(b.get("CPU", 0))) for b in dep["placement_group_bundles"])
    return Fraction(str(opts.get("num_cpus", 1)))  # Serve's default is 1 CPU per replica


def _max_replicas(dep: dict) -> int:
    auto = dep.get("autoscaling_config")
    if auto:
        return int(auto["max_replicas"])
    n = dep.get("num_replicas", 1)
    if n == "auto":
        # num_replicas: auto -> Serve's default autoscaling bounds unless given
        return int((dep.get("autoscaling_config") or {}).get("max_replicas", 100))
    return int(n)


@needs_serve_config
@pytest.mark.parametrize("overlay", [p.name for p in k8s.OVERLAYS])
def test_serve_replicas_fit_the_worker_group(overlay):
    objs = k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)
    cluster = next(o for o in objs if o["kind"] == "RayService")["spec"]["rayClusterConfig"]
    head_cpus = k8s.quantity(cluster["headGroupSpec"]["rayStartParams"].get("num-cpus", "0"))
    pod_cpus = [k8s.quantity(g["rayStartParams"]["num-cpus"]) for g in cluster["workerGroupSpecs"]]
    capacity = head_cpus + sum(
        k8s.quantity(g["rayStartParams"]["num-cpus"]) * g["maxReplicas"]
        for g in cluster["workerGroupSpecs"])
    # Ray's logical `memory` of a node is what is left after the object store (30% by default)
    pod_mem = [RAY_MEMORY_SHARE * k8s.quantity(
        g["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
        for g in cluster["workerGroupSpecs"]]
    demand = Fraction(0)
    for app in serve_config()["applications"]:
        for dep in app.get("deployments", []):
            cpus = _replica_cpus(dep)
            assert cpus <= max([head_cpus, *pod_cpus]), (
                f"{dep['name']}: one replica asks {cpus} CPUs, more than any Ray pod has")
            mem = Fraction(str((dep.get("ray_actor_options") or {}).get("memory", 0)))
            assert mem <= max(pod_mem), (
                f"{overlay}: {dep['name']} asks {mem} bytes of Ray memory per replica; a worker "
                f"pod offers about {float(max(pod_mem))}")
            demand += cpus * _max_replicas(dep)
    assert demand <= capacity, (
        f"{overlay}: Serve may ask {float(demand)} CPUs at max_replicas; the RayService cluster "
        f"has at most {float(capacity)} (head num-cpus + worker num-cpus x maxReplicas)")


# ------------------------------------------------------------------ RayJob


def _job_specs() -> list[tuple[str, dict]]:
    out = []
    for overlay in k8s.JOB_OVERLAYS:
        for obj in k8s.render_overlay(overlay):
            if obj["kind"] not in {"RayJob", "RayCronJob"}:
                continue  # the continuous-training jobs' ConfigMap
            spec = obj["spec"]["jobTemplate"] if obj["kind"] == "RayCronJob" else obj["spec"]
            out.append((f"{k8s.overlay_name(overlay)}:{k8s.obj_id(obj)}", spec))
    return out


@pytest.mark.parametrize("ident,spec", _job_specs(), ids=[i for i, _ in _job_specs()])
def test_rayjob_entrypoint_module_and_config_exist(ident, spec):
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "-m"], ident
    module = argv[2]
    assert importlib.util.find_spec(module) is not None, f"{ident}: no module {module}"
    if module == "ray_jobs.batch_predict":  # no config: its arguments are checked with the job
        return  # (test_kuberay_manifests.py, test_batch_predict_scores_the_champion_...)
    config = argv[argv.index("--config") + 1]
    # The entrypoint runs in the image's WORKDIR, a copy of the repo root (see Dockerfile).
    assert not Path(config).is_absolute()
    assert (REPO / config).is_file(), f"{ident}: {config} missing"
    assert isinstance(yaml.safe_load((REPO / config).read_text()), dict)
    dockerfile = (REPO / "Dockerfile").read_text()
    top = Path(config).parts[0]
    assert re.search(rf"^COPY .*\s{re.escape(top)}\s+\./{re.escape(top)}\s*$", dockerfile, re.M), (
        f"Dockerfile does not copy {top}/ into the image")
    assert re.search(r"^WORKDIR /home/ray/app$", dockerfile, re.M)


# ------------------------------------------------------------------ versions and images


def test_ray_versions_agree_everywhere():
    import ray

    pin = ray_pin()
    assert ray.__version__ == pin, "the installed Ray is not the pinned one"
    base = re.search(r"^FROM\s+rayproject/ray:(\S+)", (REPO / "Dockerfile").read_text(), re.M)
    assert base and base.group(1).split("-")[0] == pin
    versions = []
    for overlay in k8s.OVERLAYS + k8s.JOB_OVERLAYS:
        for obj in k8s.render_overlay(overlay):
            versions += [c["rayVersion"] for c in k8s.ray_cluster_specs(obj)]
    assert versions and set(versions) == {pin}, set(versions)


def _project_images(objs) -> set[str]:
    images = set()
    for obj in objs:
        for _, c in k8s.containers(obj):
            if not c["image"].startswith(("postgres:", "minio/minio:", "redis:")):  # third-party
                images.add(c["image"])
    return images


def test_images_agree_within_each_overlay_and_with_the_jobs():
    dev = _project_images(k8s.render_overlay(k8s.KUBERAY / "overlays" / "dev"))
    assert dev == {"raylane:dev"}, dev  # what `docker build -t raylane:dev .` produces
    prod = _project_images(k8s.render_overlay(k8s.KUBERAY / "overlays" / "prod"))
    assert len(prod) == 1, prod
    assert next(iter(prod)).endswith(":" + pyproject()["project"]["version"])
    for env, platform in (("dev", dev), ("prod", prod)):
        jobs = _project_images(k8s.render_overlay(k8s.KUBERAY / "overlays" / env / "jobs"))
        assert jobs == platform, f"{env}/jobs runs another image than the {env} platform"
    # images are the overlays' business: the bases name the bare `raylane`
    for path in [*(k8s.KUBERAY / "base").glob("*.yaml"), *(k8s.KUBERAY / "jobs").glob("*.yaml")]:
        for obj in k8s.load_file(path):
            assert _project_images([obj]) <= {"raylane"}, path
    # the postgres image is the same everywhere (server and the MLflow init container)
    pg = {c["image"] for p in k8s.OVERLAYS for o in k8s.render_overlay(p)
          for _, c in k8s.containers(o) if c["image"].startswith("postgres:")}
    assert len(pg) == 1, pg


def _container_env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_local_serving_and_the_benchmark_run_the_cluster_env_the_rayservice_ships(tmp_path):
    """`make serve` (raylane.deploy.local) and benchmarks/bench_serve.py run Serve with the same
    RAY_* settings as the serving pods (file locations, ports and HAProxy's thread count, which
    follow the machine, aside)."""
    from benchmarks.bench_serve import haproxy_env
    from raylane.deploy import local

    machine_specific = {"RAY_SERVE_HAPROXY_NBTHREAD", "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S",
                        "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S",
                        # where Prometheus/Grafana are: each environment's own
                        "RAY_PROMETHEUS_HOST", "RAY_GRAFANA_HOST", "RAY_GRAFANA_IFRAME_HOST"}
    bench = {k: v for k, v in haproxy_env(tmp_path).items()
             if not k.endswith(("_LOC", "_PATH", "_BASE", "_FILE", "_PORT"))
             and k not in machine_specific}
    assert bench == local.SERVING_ENV
    assert "RAY_worker_niceness" in bench and "RAY_SERVE_ENABLE_HA_PROXY" in bench
    # every RAY_* the pods set is in the local env too (none forgotten on either side)
    ray_env = {k for c in yaml.safe_load(RAYSERVICE.read_text())["spec"]["rayClusterConfig"][
        "headGroupSpec"]["template"]["spec"]["containers"] for k in _container_env(c)
        if k.startswith("RAY_")}
    assert ray_env - machine_specific == set(bench), ray_env ^ set(bench)
    spec = yaml.safe_load(RAYSERVICE.read_text())["spec"]["rayClusterConfig"]
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            env = _container_env(container)
            assert {k: env.get(k) for k in bench} == bench, container["name"]
            assert "RAY_SERVE_HAPROXY_NBTHREAD" in env, container["name"]


# ------------------------------------------------------------------ MLflow authentication


@pytest.mark.parametrize("overlay", [p.name for p in k8s.OVERLAYS])
def test_mlflow_auth_config_is_what_mlflow_reads(overlay, tmp_path, monkeypatch):
    """The ConfigMap's basic_auth.ini, read by MLflow's own config reader: a known default
    permission that grants nothing, the admin from the environment (the Secret), and its user
    database on the shared PostgreSQL."""
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.permissions import get_permission

    objs = {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}
    pod = objs["Deployment/mlflow"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    path = Path(env["MLFLOW_AUTH_CONFIG_PATH"])
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    ini = objs[f"ConfigMap/{volume['configMap']['name']}"]["data"][path.name]
    (tmp_path / path.name).write_text(ini)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(tmp_path / path.name))
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "from-secret")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "from-secret-too")
    config = read_auth_config()
    assert config.admin_username == "from-secret" and config.admin_password == "from-secret-too"
    assert "admin_password" not in ini
    assert not get_permission(config.default_permission).can_read  # NO_PERMISSIONS
    # the user store: a database on the tracking store's PostgreSQL, shared by every replica,
    # its credentials from the Secret through libpq's PGUSER/PGPASSWORD, none in the ConfigMap
    import sqlalchemy

    url = sqlalchemy.engine.make_url(config.database_uri)
    assert (url.get_backend_name(), url.host, url.port) == ("postgresql", "postgres", 5432)
    assert url.username is None and url.password is None and url.database
    for container in [c, *pod["initContainers"]]:
        if container["name"] not in ("mlflow", "mlflow-migrate"):
            continue
        names = [e["name"] for e in container["env"]]
        values = {e["name"]: e.get("value") for e in container["env"]}
        assert values["PGUSER"] == "$(POSTGRES_USER)", container["name"]
        assert values["PGPASSWORD"] == "$(POSTGRES_PASSWORD)", container["name"]
        assert names.index("POSTGRES_PASSWORD") < names.index("PGPASSWORD")  # $(VAR) order
