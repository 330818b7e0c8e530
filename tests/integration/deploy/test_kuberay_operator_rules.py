"""The manifests as the KubeRay v1.7.0 operator (and the API server) will treat them: the feature
gates the jobs need, RayJob clean-up that lets the next `kubectl create` succeed, serving bounds
that can all be used, the operator and Prometheus admitted by the labels they really carry, one
managed Ray token, Jobs that a later `kubectl apply -k` does not trip on, a headless Service for
the StatefulSet, HAProxy threads that fit the pod."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from support import k8s

from raylane.deploy import render

OVERLAYS = [p.name for p in k8s.OVERLAYS]
SERVE_CONFIG = k8s.REPO / "serve" / "config.yaml"
TOKEN_SECRET = "raylane-ray-token"
SERVE_TOKEN_SECRET = "raylane-serve-ray-token"


def objects(overlay: str) -> dict[str, dict]:
    return {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}


def job_specs() -> list[tuple[str, dict]]:
    """(id, RayJob spec) for every RayJob and every RayCronJob's template, every jobs overlay."""
    out = []
    for overlay in k8s.JOB_OVERLAYS:
        for o in k8s.render_overlay(overlay):
            if o["kind"] == "RayJob":
                out.append((f"{k8s.overlay_name(overlay)}:{k8s.obj_id(o)}", o["spec"]))
            elif o["kind"] == "RayCronJob":
                out.append((f"{k8s.overlay_name(overlay)}:{k8s.obj_id(o)}",
                            o["spec"]["jobTemplate"]))
    return out


# ------------------------------------------------------------------ feature gates


def test_the_documented_operator_install_enables_the_gates_the_jobs_need():
    values = yaml.safe_load((k8s.KUBERAY / "operator-values.yaml").read_text())
    gates = {g["name"]: g["enabled"] for g in values["featureGates"]}
    assert gates["RayCronJob"] is True  # alpha, off in the chart's defaults
    assert gates["RayJobDeletionPolicy"] is True  # the RayJobs' deletionRules
    readme = (k8s.REPO / "docs" / "kubernetes.md").read_text()  # the documented install
    assert "-f kuberay/operator-values.yaml" in readme


def test_cron_jobs_are_not_shipped_suspended():
    """v1.7.0's RayCronJob has no startingDeadlineSeconds: un-suspending one created weeks ago
    starts one RayJob per missed tick, and `apply -k` would set suspend back. They are created
    when wanted instead."""
    for overlay in k8s.JOB_OVERLAYS:
        crons = [o for o in k8s.render_overlay(overlay) if o["kind"] == "RayCronJob"]
        assert len(crons) == 2
        for cron in crons:
            assert "suspend" not in cron["spec"], k8s.obj_id(cron)


def test_overlapping_continuous_training_runs_refuse():
    """Every CT run takes the `continuous-training` lease first (raylane.deploy.lease)."""
    ct = [(i, s) for i, s in job_specs() if "continuous_training" in s["entrypoint"]]
    assert len(ct) == 4  # RayJob and RayCronJob, dev and prod
    for ident, spec in ct:
        lease, _, command = spec["entrypoint"].partition(" -- ")
        assert lease == "python -m raylane.deploy.lease continuous-training", ident
        assert command.startswith("python -m ray_jobs.continuous_training --config "), ident


# ------------------------------------------------------------------ RayJob clean-up


@pytest.mark.parametrize("ident,spec", job_specs(), ids=[i for i, _ in job_specs()])
def test_rayjobs_delete_themselves_soon_after_they_end(ident, spec):
    """No ttlSecondsAfterFinished (the cluster's TTL: it kept the head and workers an hour and
    left the RayJob, so the documented `kubectl create` failed with AlreadyExists the second
    time); deletionRules that remove the cluster and then the RayJob itself, whatever the end."""
    assert k8s.rayjob_operator_errors(spec) == [], ident
    assert "ttlSecondsAfterFinished" not in spec and not spec.get("shutdownAfterJobFinishes")
    rules = spec["deletionStrategy"]["deletionRules"]
    ends = [{"jobStatus": "SUCCEEDED"}, {"jobStatus": "FAILED"}, {"jobDeploymentStatus": "Failed"}]
    for end in ends:
        policies = {r["policy"]: r["condition"].get("ttlSeconds", 0) for r in rules
                    if {k: v for k, v in r["condition"].items() if k != "ttlSeconds"} == end}
        assert 0 <= policies["DeleteSelf"] <= 900, (ident, end)
        if "rayClusterSpec" in spec:  # its own cluster goes first, at most 5 min after the end
            assert policies["DeleteCluster"] <= 300, (ident, end)


def test_the_operator_rules_reject_what_kuberay_rejects():
    spec = copy.deepcopy(dict(job_specs())["dev/jobs:RayJob/raylane-train"])
    assert k8s.rayjob_operator_errors(spec) == []
    old = {**spec, "shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": 3600}
    assert any("mutually exclusive" in e for e in k8s.rayjob_operator_errors(old))
    ttl_only = {**copy.deepcopy(spec), "ttlSecondsAfterFinished": 60}
    assert k8s.rayjob_operator_errors(ttl_only)
    assert k8s.rayjob_operator_errors(spec, enabled_gates=frozenset())  # gate off
    rules = spec["deletionStrategy"]["deletionRules"]
    rules[1]["condition"]["ttlSeconds"] = 0  # DeleteSelf before DeleteCluster... same TTL: fine
    assert k8s.rayjob_operator_errors(spec) == []
    rules[2]["condition"]["ttlSeconds"] = 900  # FAILED: DeleteCluster 900 > DeleteSelf 600
    assert any("TTLs" in e for e in k8s.rayjob_operator_errors(spec))
    on_cluster = copy.deepcopy(dict(job_specs())["dev/jobs:RayJob/raylane-train-on-cluster"])
    on_cluster["deletionStrategy"]["deletionRules"][0]["policy"] = "DeleteCluster"
    assert any("clusterSelector" in e for e in k8s.rayjob_operator_errors(on_cluster))


# ------------------------------------------------------------------ serving bounds


def _serve_group(rayservice: dict) -> dict:
    return next(g for g in rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
                if g["groupName"] == render.SERVE_GROUP)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_and_worker_bounds_are_one_computed_pair(overlay):
    """Every serve worker pod between minReplicas and maxReplicas can hold a replica Serve may
    ask for: maxReplicas pods are what max_replicas fills (one pod fewer would not hold them),
    minReplicas what min_replicas fills; and the pair is in the pods' annotation, the field that
    makes a change of bounds reach a running RayService (KubeRay v1.7 hashes no bounds)."""
    serve = yaml.safe_load(SERVE_CONFIG.read_text())
    (dep,) = render._deployments(serve)
    group = _serve_group(objects(overlay)["RayService/raylane-serve"])
    pod = render.pod_of_group(group)
    per_pod = render.replicas_per_pod(dep, pod)
    auto = dep["autoscaling_config"]
    lo, hi = group["minReplicas"], group["maxReplicas"]
    assert (lo, hi) == (math.ceil(auto["min_replicas"] / per_pod),
                        math.ceil(auto["max_replicas"] / per_pod))
    assert (hi - 1) * per_pod < auto["max_replicas"] <= hi * per_pod
    assert (lo - 1) * per_pod < max(auto["min_replicas"], 1) <= lo * per_pod
    assert group["replicas"] == lo
    assert group["template"]["metadata"]["annotations"][render.BOUNDS_ANNOTATION] == f"{lo}-{hi}"


def test_render_recomputes_the_bounds_when_serve_changes(tmp_path):
    serve = yaml.safe_load(SERVE_CONFIG.read_text())
    serve["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"] = 9
    serve["applications"][0]["deployments"][0]["autoscaling_config"]["min_replicas"] = 5
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(serve))
    manifest = tmp_path / "rayservice.yaml"
    manifest.write_text((k8s.KUBERAY / "base" / "rayservice.yaml").read_text())
    patch = tmp_path / "patch.yaml"
    patch.write_text((k8s.REPO / render.DEFAULT_DEV_PATCH).read_text())
    args = ["--serve-config", str(cfg), "--manifest", str(manifest), "--dev-patch", str(patch)]
    assert render.main([*args, "--check"]) == 1
    assert render.main(args) == 0
    group = _serve_group(yaml.safe_load(manifest.read_text()))
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (2, 2, 3)  # 4/pod
    ops = {op["path"].rsplit("/", 1)[1]: op["value"] for op in yaml.safe_load(patch.read_text())}
    assert (ops["minReplicas"], ops["maxReplicas"], ops["raylane.io~1worker-bounds"]) == (
        5, 9, "5-9")  # one per 1-CPU pod
    assert render.main([*args, "--check"]) == 0
    # the manifest's own comments stay where they were
    def head(text: str) -> list[str]:
        return [line for line in text.split("serveConfigV2:")[0].splitlines() if "#" in line]
    assert head(manifest.read_text()) == head(
        (k8s.KUBERAY / "base" / "rayservice.yaml").read_text())


def test_a_replica_that_fits_no_pod_is_refused():
    serve = yaml.safe_load(SERVE_CONFIG.read_text())
    serve["applications"][0]["deployments"][0]["ray_actor_options"]["num_cpus"] = 8
    with pytest.raises(render.RenderError, match="does not fit"):
        render.worker_bounds(serve, render.Pod(render.quantity("4"), render.quantity("8Gi")))


# ------------------------------------------------------------------ who reaches the Ray pods


def _operator_pods() -> list[dict]:
    """The KubeRay operator's pod labels as v1.7.0 installs them (Helm chart; kustomize
    ray-operator/config/manager/manager.yaml)."""
    return [{"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "x",
             "app.kubernetes.io/component": "kuberay-operator"},
            {"app.kubernetes.io/name": "kuberay",
             "app.kubernetes.io/component": "kuberay-operator"}]


def _admitted(policy: dict, labels: dict, port: int) -> bool:
    for rule in policy["spec"]["ingress"]:
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        for peer in rule.get("from", []):
            if "namespaceSelector" not in peer:
                continue  # this namespace only
            want = peer["podSelector"].get("matchLabels", {})
            if all(labels.get(k) == v for k, v in want.items()):
                return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_operator_and_prometheus_reach_the_ray_pods(overlay):
    ray = objects(overlay)["NetworkPolicy/ray"]
    for labels in _operator_pods():  # however the operator was installed
        assert _admitted(ray, labels, 8265), labels
        assert not _admitted(ray, labels, 6379), labels
    prometheus = {"app.kubernetes.io/name": "prometheus", "prometheus": "k8s"}
    for port in (8080, 44217, 44227):
        assert _admitted(ray, prometheus, port), port
    assert not _admitted(ray, prometheus, 8265)
    assert not _admitted(ray, {"app": "anything"}, 8265)


# ------------------------------------------------------------------ one Ray token


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_managed_ray_tokens_one_for_the_jobs_clusters_one_for_serving(overlay):
    """authOptions.secretName on every cluster (the RayService's generated cluster included: its
    own Secret would change name with every NewCluster rollout): the jobs clusters share one, the
    serving cluster has its own, and the console holds only the serving cluster's (it starts
    training jobs as RayJobs, never through the jobs cluster's Jobs API)."""
    platform = list(k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay))
    jobs = list(k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay / "jobs"))
    serving = [c for o in platform if o["kind"] == "RayService" for c in k8s.ray_cluster_specs(o)]
    job_clusters = [c for o in platform + jobs if o["kind"] != "RayService"
                    for c in k8s.ray_cluster_specs(o)]
    assert len(job_clusters) >= 3 and len(serving) == 1
    assert {c["authOptions"]["secretName"] for c in job_clusters} == {TOKEN_SECRET}
    assert {c["authOptions"]["secretName"] for c in serving} == {SERVE_TOKEN_SECRET}
    assert all(c["authOptions"]["mode"] == "token" for c in job_clusters + serving)
    console = objects(overlay)["Deployment/raylane-console"]["spec"]["template"]["spec"]
    text = yaml.safe_dump(console)
    assert SERVE_TOKEN_SECRET in text and TOKEN_SECRET not in text.replace(SERVE_TOKEN_SECRET, "")
    if overlay == "dev":
        for name in (TOKEN_SECRET, SERVE_TOKEN_SECRET):
            secret = objects(overlay)[f"Secret/{name}"]
            assert set(secret["data"]) == {"auth_token"}
        assert (objects(overlay)[f"Secret/{TOKEN_SECRET}"]["data"]
                != objects(overlay)[f"Secret/{SERVE_TOKEN_SECRET}"]["data"])


# ------------------------------------------------------------------ Jobs, Services, threads


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_job_trips_the_next_apply(overlay):
    """`kubectl apply -k` re-applies every Job in the overlay: a Job deleted by a TTL comes back,
    one within its TTL with a changed template fails (spec.template is immutable). So: no TTL,
    and nothing in the platform that changes with a release (the accounts: the MLflow pod's
    sidecar)."""
    jobs = [o for o in objects(overlay).values() if o["kind"] == "Job"]
    for job in jobs:
        assert "ttlSecondsAfterFinished" not in job["spec"], k8s.obj_id(job)
        images = {c["image"] for c in job["spec"]["template"]["spec"]["containers"]}
        assert images <= {"raylane:dev"}, "a Job whose image changes per release"
    assert "Job/mlflow-accounts" not in objects(overlay)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_postgres_statefulset_has_its_headless_service(overlay):
    objs = objects(overlay)
    sts = objs["StatefulSet/postgres"]
    svc = objs[f"Service/{sts['spec']['serviceName']}"]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_haproxy_threads_fit_the_pod(overlay):
    for _, obj in objects(overlay).items():
        for where, c in k8s.ray_containers(obj):
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if "RAY_SERVE_HAPROXY_NBTHREAD" not in env:
                continue
            cpus = k8s.quantity(c["resources"]["limits"]["cpu"])
            assert 1 <= int(env["RAY_SERVE_HAPROXY_NBTHREAD"]) <= max(1, math.floor(cpus / 2)), (
                where, env["RAY_SERVE_HAPROXY_NBTHREAD"], cpus)
