"""The head that can die, on Kubernetes: both long-lived Ray clusters keep the GCS's state in the
Redis the manifests deploy (gcsFaultToleranceOptions, password from a Secret, never a command
line), the heads run no replicas and the serve Service skips the head, and only Ray pods reach
Redis. Checked against KubeRay v1.7.0's validation of those fields (validation.go)."""

from __future__ import annotations

import base64
import copy

import pytest
from support import k8s

OVERLAYS = [p.name for p in k8s.OVERLAYS]
CLUSTERS = ("RayCluster/raylane", "RayService/raylane-serve")


def objects(overlay: str) -> dict[str, dict]:
    return {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}


def ft_operator_errors(cluster: dict, annotations: dict) -> list[str]:
    """KubeRay v1.7.0's checks of GCS fault tolerance (ValidateRayClusterSpec)."""
    errs = []
    ft = cluster.get("gcsFaultToleranceOptions")
    head = cluster["headGroupSpec"]
    env = {e["name"] for e in head["template"]["spec"]["containers"][0].get("env", [])}
    if annotations.get("ray.io/ft-enabled") and ft:
        errs.append("ray.io/ft-enabled annotation and gcsFaultToleranceOptions")
    if ft:
        if head["rayStartParams"].get("redis-password"):
            errs.append("redis-password in rayStartParams")
        if {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS"} & env:
            errs.append("REDIS_PASSWORD / RAY_REDIS_ADDRESS in the head's env")
        if annotations.get("ray.io/external-storage-namespace"):
            errs.append("external-storage-namespace annotation")
    if head["rayStartParams"].get("redis-username") or "REDIS_USERNAME" in env:
        errs.append("redis username outside gcsFaultToleranceOptions")
    return errs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_clusters_keep_the_gcs_in_the_deployed_redis(overlay):
    objs = objects(overlay)
    svc = objs["Service/redis"]
    address = f"{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"
    for ident in CLUSTERS:
        obj = objs[ident]
        (cluster,) = k8s.ray_cluster_specs(obj)
        ft = cluster["gcsFaultToleranceOptions"]
        assert ft["redisAddress"] == address, ident
        ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "raylane-redis", "key": "password"}, ident
        assert ft_operator_errors(cluster, obj["metadata"].get("annotations", {})) == [], ident
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", ident
    assert objs["RayService/raylane-serve"]["spec"]["excludeHeadPodFromServeSvc"] is True


def test_the_operator_checks_catch_a_password_on_the_head():
    obj = copy.deepcopy(objects("dev")["RayCluster/raylane"])  # the render is cached: a copy
    (cluster,) = k8s.ray_cluster_specs(obj)
    assert ft_operator_errors(cluster, {}) == []
    cluster["headGroupSpec"]["rayStartParams"]["redis-password"] = "x"
    assert ft_operator_errors(cluster, {"ray.io/ft-enabled": "true"})


def test_redis_takes_the_password_ray_is_given_from_a_file():
    """dev: the Secret's `auth.conf` (included by redis.conf, mounted where the include names)
    sets exactly the `password` the Ray clusters send; nothing secret on a command line."""
    objs = objects("dev")
    secret = objs["Secret/raylane-redis"]["data"]
    data = {k: base64.b64decode(v).decode() for k, v in secret.items()}
    assert data["auth.conf"].split() == ["requirepass", data["password"]]
    conf = objs["ConfigMap/redis-config"]["data"]["redis.conf"]
    include = next(line.split()[1] for line in conf.splitlines() if line.startswith("include "))
    pod = objs["Deployment/redis"]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert k8s.secret_files(pod, c)[include] == ("raylane-redis", "auth.conf")
    config_mount = next(m for m in c["volumeMounts"] if c["command"][1].startswith(
        m["mountPath"] + "/"))
    assert next(v for v in pod["volumes"] if v["name"] == config_mount["name"])["configMap"][
        "name"] == "redis-config"
    assert "requirepass" not in " ".join(c["command"] + c.get("args", []))
    assert "appendonly yes" in conf and "dir /data" in conf
    data_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/data")
    assert next(v for v in pod["volumes"] if v["name"] == data_mount["name"])[
        "persistentVolumeClaim"]["claimName"] == "redis-data"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_ray_pods_reach_redis(overlay):
    objs = objects(overlay)
    policy = objs["NetworkPolicy/redis"]["spec"]
    redis_labels = objs["Deployment/redis"]["spec"]["template"]["metadata"]["labels"]
    assert all(redis_labels.get(k) == v for k, v in policy["podSelector"]["matchLabels"].items())
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"raylane.io/ray-node": "true"}}}]
    assert [p["port"] for p in rule["ports"]] == [6379]
    assert [p["port"] for r in policy["egress"] for p in r["ports"]] == [53, 53]
    ray = objs["NetworkPolicy/ray"]["spec"]
    assert any(peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name":
                                                                   "redis"}
               and [p["port"] for p in r["ports"]] == [6379]
               for r in ray["egress"] for peer in r.get("to", []))
