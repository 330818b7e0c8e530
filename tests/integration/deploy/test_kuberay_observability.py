"""Metrics on Kubernetes (kuberay/observability): PodMonitors that select the Ray pods and name
ports those pods declare, the heads pointed at Prometheus and Grafana, Ray's own Grafana
dashboards generated from Ray's factory into ConfigMaps Grafana's sidecar loads, the
PrometheusRule; and `make observe`'s Prometheus config on the file Ray writes."""

from __future__ import annotations

import json

import pytest
import yaml
from support import k8s

from raylane.deploy import render
from raylane.observability import local, manifests

OBSERVABILITY = k8s.KUBERAY / "observability"


def observability() -> dict[str, dict]:
    return {k8s.obj_id(o): o for o in k8s.render_overlay(OBSERVABILITY)}


def test_generated_files_are_up_to_date(monkeypatch):
    monkeypatch.chdir(k8s.REPO)
    assert render.main(["--check"]) == 0
    for name, text in manifests.grafana_dashboards().items():
        assert (k8s.REPO / manifests.DASHBOARDS / name).read_text() == text, name


def test_dashboards_are_configmaps_grafana_loads():
    maps = [o for o in observability().values() if o["kind"] == "ConfigMap"]
    assert len(maps) == len(manifests.DASHBOARD_FACTORIES)
    uids = set()
    for cm in maps:
        assert k8s.errors(cm) == [], k8s.obj_id(cm)
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["namespace"] == "raylane"
        ((name, text),) = cm["data"].items()
        dashboard = json.loads(text)
        assert name == f"{dashboard['uid']}.json" and dashboard["panels"], name
        uids.add(dashboard["uid"])
        assert len(text.encode()) < 1024 * 1024  # a ConfigMap's limit
    assert {"rayDefaultDashboard", "rayServeDashboard", "rayServeDeploymentDashboard"} <= uids


def _ray_pods(overlay: str):
    """(node type, labels with KubeRay's node-type label, Ray container) for the platform's
    long-lived clusters."""
    objs = {k8s.obj_id(o): o for o in k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay)}
    out = []
    for ident in ("RayCluster/raylane", "RayService/raylane-serve"):
        cluster = k8s.ray_cluster_specs(objs[ident])[0]
        groups = [("head", cluster["headGroupSpec"])] + [
            ("worker", g) for g in cluster["workerGroupSpecs"]]
        for node_type, group in groups:
            labels = {**group["template"]["metadata"]["labels"], "ray.io/node-type": node_type}
            out.append((node_type, labels, group["template"]["spec"]["containers"][0]))
    return out


@pytest.mark.parametrize("overlay", [p.name for p in k8s.OVERLAYS])
def test_pod_monitors_scrape_ports_the_ray_pods_declare(overlay):
    monitors = [o for o in observability().values() if o["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"raylane-ray-heads",
                                                         "raylane-ray-workers"}
    covered = set()
    for monitor in monitors:
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        want = monitor["spec"]["selector"]["matchLabels"]
        matched = [(t, c) for t, labels, c in _ray_pods(overlay)
                   if all(labels.get(k) == v for k, v in want.items())]
        assert matched, monitor["metadata"]["name"]
        for node_type, c in matched:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for endpoint in monitor["spec"]["podMetricsEndpoints"]:
                assert endpoint["port"] in ports, (node_type, endpoint["port"])
                covered.add((node_type, ports[endpoint["port"]]))
    # Ray's defaults: metrics-export-port 8080; autoscaler 44217 and dashboard 44227 on heads
    assert covered == {("head", 8080), ("head", 44217), ("head", 44227), ("worker", 8080)}


@pytest.mark.parametrize("overlay", [p.name for p in k8s.OVERLAYS])
def test_heads_know_prometheus_and_grafana(overlay):
    for node_type, _, c in _ray_pods(overlay):
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        if node_type == "head":
            assert env["RAY_PROMETHEUS_HOST"].endswith(":9090")
            assert env["RAY_GRAFANA_HOST"].startswith("http://")
            assert env["RAY_GRAFANA_IFRAME_HOST"].startswith("http://")


def test_the_prometheus_rule_ships_with_the_monitors():
    rule = observability()["PrometheusRule/raylane"]
    assert rule["spec"]["groups"] == manifests.load_rules(k8s.REPO / manifests.ALERTS)["groups"]


def test_make_serve_points_the_head_at_make_observe(tmp_path, monkeypatch):
    from raylane.deploy import local as deploy_local

    monkeypatch.delenv("RAY_PROMETHEUS_HOST", raising=False)
    env = deploy_local.cluster_env(tmp_path)
    assert env["RAY_PROMETHEUS_HOST"] == f"http://127.0.0.1:{local.DEFAULT_PORT}"
    assert "RAY_GRAFANA_HOST" not in env  # no Grafana locally


def test_make_observe_scrapes_the_file_ray_writes(tmp_path):
    """The file Ray's metrics agent writes (session dir, PROMETHEUS_SERVICE_DISCOVERY_FILE),
    under the current session of `make serve`'s temp dir, with the rules loaded."""
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    sd = local.discovery_file(tmp_path)
    assert sd == tmp_path / "session_latest" / PROMETHEUS_SERVICE_DISCOVERY_FILE
    config = local.prometheus_config(sd, k8s.REPO / manifests.ALERTS, 5)
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [str(sd)]
    assert config["rule_files"] == [str((k8s.REPO / manifests.ALERTS).resolve())]
    assert yaml.safe_load(yaml.safe_dump(config)) == config
