"""The serving cluster's RAY_* environment has one home, serve/cluster_env.yaml: `make serve`
and the benchmarks read it, and ``raylane.deploy.render`` writes it into the RayService."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from raylane.deploy import cluster_env, local, render

ROOT = Path(__file__).resolve().parents[3]
FILE = ROOT / "serve" / "cluster_env.yaml"
MANIFEST = ROOT / "kuberay" / "base" / "rayservice.yaml"
SERVE = ROOT / "serve" / "config.yaml"


def ray_envs(manifest_text: str) -> list[dict[str, str]]:
    """Each Ray container's env values in the RayService (head first, then each worker)."""
    spec = next(d for d in yaml.safe_load_all(manifest_text)
                if d and d.get("kind") == "RayService")["spec"]["rayClusterConfig"]
    pods = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [{e["name"]: e.get("value") for e in c.get("env", [])}
            for p in pods for c in p["template"]["spec"]["containers"]]


def test_make_serve_and_the_benchmarks_read_the_file(tmp_path):
    from benchmarks.bench_serve import haproxy_env

    env = cluster_env.load(FILE)
    assert env == local.SERVING_ENV and "RAY_SERVE_ENABLE_HA_PROXY" in env
    assert {k: haproxy_env(tmp_path)[k] for k in env} == env


def test_the_committed_rayservice_is_rendered_from_the_file():
    assert render.render(SERVE, MANIFEST, FILE) == MANIFEST.read_text()
    env = cluster_env.load(FILE)
    for container in ray_envs(MANIFEST.read_text()):
        assert {k: container[k] for k in env} == env


def test_a_changed_value_reaches_every_ray_container_and_nothing_else(tmp_path):
    changed = tmp_path / "cluster_env.yaml"
    changed.write_text(FILE.read_text().replace('RAY_SERVE_HAPROXY_RETRIES: "2"',
                                                'RAY_SERVE_HAPROXY_RETRIES: "1"'))
    before = MANIFEST.read_text()
    after = render.render(SERVE, MANIFEST, changed)
    assert all(c["RAY_SERVE_HAPROXY_RETRIES"] == "1" for c in ray_envs(after))
    diff = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True)
            if a != b]
    assert len(diff) == len(ray_envs(before))  # one value line per container, comments kept
    assert render.main(["--serve-config", str(SERVE), "--manifest", str(MANIFEST),
                        "--cluster-env", str(changed), "--check"]) == 1


def test_a_variable_no_container_lists_is_refused(tmp_path):
    extra = tmp_path / "cluster_env.yaml"
    extra.write_text(FILE.read_text() + 'RAY_SERVE_SOMETHING_NEW: "1"\n')
    with pytest.raises(cluster_env.ClusterEnvError, match="RAY_SERVE_SOMETHING_NEW"):
        render.render(SERVE, MANIFEST, extra)


def test_values_must_be_strings(tmp_path):
    bad = tmp_path / "cluster_env.yaml"
    bad.write_text("RAY_SERVE_HAPROXY_RETRIES: 2\n")
    with pytest.raises(cluster_env.ClusterEnvError, match="quoted strings"):
        cluster_env.load(bad)
