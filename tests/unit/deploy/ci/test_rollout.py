"""The deploy workflow's rollout script (raylane.deploy.ci.rollout) against a fake `kubectl` on
PATH that replays RayService status sequences (tests/unit/rollout_statuses, shaped as the
vendored KubeRay v1.7.0 CRD's status schema, checked below): a ready rollout succeeds and
smoke-tests through the port-forward; a stuck or failed one fails with the status shown and
applies nothing more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[4]
STATUSES = Path(__file__).parent / "rollout_statuses"
IMAGE, TAG = "ghcr.io/acme/raylane", "sha-new"


def run_rollout(tmp_path: Path, scenario: str, *extra: str) -> tuple[int, str, list[dict]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "fake_kubectl.py")
                    .read_text())
    fake.chmod(0o755)
    log = tmp_path / "kubectl.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_KUBECTL_SCENARIO": str(STATUSES / f"{scenario}.json"),
           "FAKE_KUBECTL_LOG": str(log)}
    proc = subprocess.run(
        [sys.executable, "-m", "raylane.deploy.ci.rollout", "--overlay",
         str(ROOT / "kuberay" / "overlays" / "prod"), "--image", IMAGE, "--tag", TAG,
         "--poll", "0.05", *extra], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, calls


def verbs(calls: list[dict]) -> list[str]:
    return [" ".join(c["argv"][2:4]) for c in calls]


def test_ready_rollout_applies_once_waits_for_the_new_cluster_and_smoke_tests(tmp_path):
    code, out, calls = run_rollout(tmp_path, "ready", "--timeout", "30")
    assert code == 0, out
    assert verbs(calls).count("apply -k") == 1 and verbs(calls)[0] == "apply -k"
    applied = yaml.safe_load(calls[0]["kustomization"])
    assert {(i["newName"], i["newTag"]) for i in applied["images"]} == {(IMAGE, TAG)}
    assert {i["name"] for i in applied["images"]} == {"raylane", "registry.example.com/raylane"}
    # every status of the sequence was read before it was done, then the Service was reached
    assert verbs(calls).count("get rayservice") == 4
    assert calls[-1]["argv"][2:4] == ["port-forward", "svc/raylane-serve-serve-svc"]
    assert "cluster raylane-serve-raylane-new2 serves ghcr.io/acme/raylane:sha-new" in out
    assert "smoke test passed" in out


@pytest.mark.parametrize("scenario,shown", [
    ("stuck", "rollout stuck: ghcr.io/acme/raylane:sha-new not serving after 1 s"),
    ("failed", "rollout failed: Serve application(s) {'raylane': 'DEPLOY_FAILED'} on the pending"),
])
def test_stuck_or_failed_rollout_fails_with_the_status_and_applies_nothing_more(
        tmp_path, scenario, shown):
    code, out, calls = run_rollout(tmp_path, scenario, "--timeout", "1")
    assert code == 1, out
    assert shown in out
    assert "RayService status:" in out and '"pendingServiceStatus"' in out
    assert "raylane-serve-raylane-new2" in out  # the pending cluster, named in the status
    assert verbs(calls).count("apply -k") == 1
    assert set(verbs(calls)[1:]) == {"get rayservice"}  # no smoke test, nothing applied after


def test_bad_overlay_is_refused_before_kubectl(tmp_path):
    code, out, calls = run_rollout(tmp_path, "ready", "--overlay", str(tmp_path))
    assert code == 2 and "--overlay" in out and calls == []


@pytest.mark.parametrize("scenario", ["ready", "stuck", "failed"])
def test_status_sequences_match_the_kuberay_crd(scenario):
    crd = yaml.load((ROOT / "kuberay" / "crds" / "ray.io_rayservices.yaml").read_text(),
                    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")[
        "schema"]["openAPIV3Schema"]["properties"]["status"]
    strict = _no_unknown_fields(schema)
    for service in json.loads((STATUSES / f"{scenario}.json").read_text())["rayservice"]:
        jsonschema.validate(service["status"], strict)


def _no_unknown_fields(node):
    """The CRD's structural schema with unknown fields as errors (status fields are typed)."""
    if isinstance(node, list):
        return [_no_unknown_fields(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _no_unknown_fields(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k not in {"description", "format"}}
    if "properties" in node and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


@pytest.mark.parametrize("args,named", [
    (["--tag", "sha-1; rm -rf /"], "--tag"), (["--image", "Ghcr.io/Acme/raylane"], "--image"),
    (["--image", "ghcr.io/acme/raylane:v1"], "--image")])
def test_bad_image_or_tag_is_refused_before_kubectl(tmp_path, args, named):
    code, out, calls = run_rollout(tmp_path, "ready", *args)
    assert code == 2 and f"error: {named}" in out and calls == [], out
