"""Kubernetes isolation: who reaches which port (the NetworkPolicies, evaluated for the pods the
manifests create), egress allowlists, credentials as files (read back by the clients that use
them), exact MLflow host names, read-only root filesystems with writable paths mounted, service
account tokens only where used."""

from __future__ import annotations

import base64
import configparser
import ipaddress
import os
import subprocess
import sys

import pytest
from support import k8s

OVERLAYS = [p.name for p in k8s.OVERLAYS]


def platform(overlay: str) -> list[dict]:
    objs = list(k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay))
    return objs + list(k8s.render_overlay(k8s.KUBERAY / "overlays" / overlay / "jobs"))


def objects(overlay: str) -> dict[str, dict]:
    return {k8s.obj_id(o): o for o in platform(overlay)}


def all_pods(overlay: str) -> list[tuple[str, dict]]:
    return [(f"{k8s.obj_id(o)}:{where}", pod) for o in platform(overlay)
            for where, pod in k8s.pod_specs(o)]


# ------------------------------------------------------------------ a NetworkPolicy evaluator


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict, labels: dict | None, ip: str | None, same_ns: bool) -> bool:
    if "ipBlock" in peer:
        if ip is None:
            return False
        block = peer["ipBlock"]
        addr = ipaddress.ip_address(ip)
        return addr in ipaddress.ip_network(block["cidr"]) and not any(
            addr in ipaddress.ip_network(e) for e in block.get("except", []))
    if labels is None:
        return False
    if "namespaceSelector" not in peer and not same_ns:
        return False
    return _selects(peer.get("podSelector", {}), labels)


def _allowed(policies: list[dict], direction: str, subject: dict, peer_labels: dict | None,
             port: int, ip: str | None = None, same_ns: bool = True) -> bool:
    """Whether traffic is allowed for the pod labelled ``subject`` (ingress: from the peer;
    egress: to it), by the policies of its namespace (all that select it add up; none: open)."""
    kind = "Ingress" if direction == "ingress" else "Egress"
    mine = [p["spec"] for p in policies if _selects(p["spec"]["podSelector"], subject)
            and kind in p["spec"]["policyTypes"]]
    if not mine:
        return True
    for spec in mine:
        for rule in spec.get(direction, []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get("from" if direction == "ingress" else "to")
            if peers is None or any(_peer_matches(p, peer_labels, ip, same_ns) for p in peers):
                return True
    return False


def _policies(overlay: str) -> list[dict]:
    return [o for o in platform(overlay) if o["kind"] == "NetworkPolicy"]


def _labels(overlay: str, ident: str, where: str = "head") -> dict:
    obj = objects(overlay)[ident]
    if obj["kind"] in {"Deployment", "StatefulSet", "Job"}:
        return obj["spec"]["template"]["metadata"]["labels"]
    spec = obj["spec"].get("jobTemplate", obj["spec"]) if obj["kind"] == "RayCronJob" else obj[
        "spec"]
    if where == "submitter":
        return spec["submitterPodTemplate"]["metadata"]["labels"]
    cluster = k8s.ray_cluster_specs(obj)[0]
    group = cluster["headGroupSpec"] if where == "head" else cluster["workerGroupSpecs"][0]
    return group["template"]["metadata"]["labels"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_jobs_api_only_from_submitters_the_console_and_the_operator(overlay):
    pols = _policies(overlay)
    heads = [_labels(overlay, "RayCluster/raylane"), _labels(overlay, "RayService/raylane-serve")]
    submitter = _labels(overlay, "RayJob/raylane-train", "submitter")
    console = _labels(overlay, "Deployment/raylane-console")
    mlflow = _labels(overlay, "Deployment/mlflow")
    worker = _labels(overlay, "RayJob/raylane-train", "worker")
    any_pod = {"app": "something-else"}
    operator = {"app.kubernetes.io/name": "kuberay", "app.kubernetes.io/component":
                "kuberay-operator"}
    for head in heads:
        for who in (submitter, console, worker):
            assert _allowed(pols, "ingress", head, who, 8265), who
        assert _allowed(pols, "ingress", head, operator, 8265, same_ns=False)
        for who in (mlflow, any_pod):  # any other pod of the namespace: not the Jobs API ...
            assert not _allowed(pols, "ingress", head, who, 8265), who
            for port in (6379, 10001, 8080):  # ... nor GCS, the client port, metrics
                assert not _allowed(pols, "ingress", head, who, port), (who, port)
        for port in (6379, 10001):  # submitters and the console: 8265 only
            assert not _allowed(pols, "ingress", head, submitter, port)
            assert not _allowed(pols, "ingress", head, console, port)
        assert _allowed(pols, "ingress", head, worker, 6379)  # Ray pods: each other, any port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ray_egress_is_an_allowlist(overlay):
    pols = _policies(overlay)
    worker = _labels(overlay, "RayService/raylane-serve", "worker")
    head = _labels(overlay, "RayCluster/raylane")
    mlflow = _labels(overlay, "Deployment/mlflow")
    postgres = _labels(overlay, "StatefulSet/postgres")
    for pod in (worker, head):
        assert _allowed(pols, "egress", pod, mlflow, 5000)
        assert _allowed(pols, "egress", pod, head, 6379)
        assert _allowed(pols, "egress", pod, None, 53, ip="10.96.0.10")  # DNS
        assert _allowed(pols, "egress", pod, None, 443, ip="52.216.1.1")  # S3 over HTTPS
        assert not _allowed(pols, "egress", pod, None, 80, ip="169.254.169.254")  # metadata
        assert not _allowed(pols, "egress", pod, None, 443, ip="169.254.169.254")
        assert not _allowed(pols, "egress", pod, postgres, 5432)
        assert not _allowed(pols, "egress", pod, None, 80, ip="93.184.216.34")  # the internet
        minio = {"app.kubernetes.io/name": "minio"}
        assert _allowed(pols, "egress", pod, minio, 9000) == (overlay == "dev")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_console_has_its_own_policy(overlay):
    pols = _policies(overlay)
    console = _labels(overlay, "Deployment/raylane-console")
    assert [p["metadata"]["name"] for p in pols if _selects(p["spec"]["podSelector"], console)
            ] == ["console"]
    for who in ({"app": "x"}, _labels(overlay, "RayCluster/raylane"),
                _labels(overlay, "Deployment/mlflow")):
        assert not _allowed(pols, "ingress", console, who, 8501), who
    assert _allowed(pols, "ingress", console, {"raylane.io/console-client": "true"}, 8501)
    serve_worker = _labels(overlay, "RayService/raylane-serve", "worker")
    assert _allowed(pols, "egress", console, serve_worker, 8000)
    assert _allowed(pols, "egress", console, _labels(overlay, "RayCluster/raylane"), 8265)
    assert _allowed(pols, "egress", console, _labels(overlay, "Deployment/mlflow"), 5000)
    assert not _allowed(pols, "egress", console, _labels(overlay, "RayCluster/raylane"), 6379)
    assert not _allowed(pols, "egress", console, None, 80, ip="169.254.169.254")
    assert not _allowed(pols, "egress", console, None, 443, ip="93.184.216.34")


# ------------------------------------------------------------------ credentials as files


def _no_secret_env(c: dict) -> bool:
    return not [e for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})] and not [
        e for e in c.get("envFrom", []) if "secretRef" in e]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_credential_in_the_environment_of_ray_pods_submitters_or_the_console(overlay):
    """Every trial, replica and job process inherits its container's environment (and Ray puts
    runtime envs in logs): the MLflow and S3 credentials are mounted files instead. (The Ray
    token is the operator's: KubeRay injects RAY_AUTH_TOKEN into Ray containers itself.)"""
    checked = 0
    for obj in platform(overlay):
        if obj["kind"] in k8s.RAY_KINDS or k8s.obj_id(obj) == "Deployment/raylane-console":
            for where, c in k8s.containers(obj):
                assert _no_secret_env(c), where
                checked += 1
    assert checked >= 15


def _secret_data(overlay: str, name: str) -> dict[str, str]:
    secret = objects(overlay)[f"Secret/{name}"]
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_mlflow_reads_the_mounted_credentials_file(tmp_path, monkeypatch):
    """The dev Secret's `credentials`, at the path the pods mount it (relative to the image's
    HOME), is what MLflow's own client reads."""
    from mlflow.utils.credentials import read_mlflow_creds

    obj = objects("dev")["RayService/raylane-serve"]
    _, pod, c = k8s.ray_pods(obj)[0]
    ((path, (secret, key)),) = [(p, v) for p, v in k8s.secret_files(pod, c).items()
                                if p.endswith("/.mlflow/credentials")]
    home = path.removesuffix("/.mlflow/credentials")
    assert home == "/home/ray"  # the image's user (Dockerfile)
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(_secret_data("dev", secret)[key])
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    creds = read_mlflow_creds()
    assert (creds.username, creds.password) == ("raylane-serving", "serving-dev-only")


def test_the_accounts_sidecar_reads_the_same_files(tmp_path):
    from raylane.deploy.mlflow_accounts import accounts_from_env

    env = {}
    for role in ("writer", "reader"):
        path = tmp_path / role
        path.write_text(_secret_data("dev", f"mlflow-{role}")["credentials"])
        env[f"RAYLANE_MLFLOW_{role.upper()}_CREDENTIALS"] = str(path)
    writer, reader = accounts_from_env(env)
    assert (writer.username, reader.username) == ("raylane-trainer", "raylane-serving")


_SIGNING_PROBE = r"""
import http.server, os, sys, threading
import pyarrow.fs as fs

seen = []
class H(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        seen.append(self.headers.get("Authorization", ""))
        self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
    do_GET = do_HEAD
    def log_message(self, *a): pass

srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
s3 = fs.S3FileSystem(endpoint_override=f"127.0.0.1:{srv.server_port}", scheme="http",
                     region="us-east-1", retry_strategy=fs.AwsStandardS3RetryStrategy(0))
try:
    s3.get_file_info("bucket/key")
except Exception:
    pass
print(seen[0] if seen else "no request")
"""


def test_pyarrow_signs_with_the_mounted_s3_credentials_file(tmp_path):
    """The prediction log's writer (pyarrow's S3 client) signs with the key of the file
    AWS_SHARED_CREDENTIALS_FILE names, no AWS_* key in the environment."""
    obj = objects("dev")["RayService/raylane-serve"]
    _, pod, c = k8s.ray_pods(obj)[0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    secret, key = k8s.secret_files(pod, c)[env["AWS_SHARED_CREDENTIALS_FILE"]]
    text = _secret_data("dev", secret)[key]
    config = configparser.ConfigParser()
    config.read_string(text)
    key_id = config["default"]["aws_access_key_id"]
    (tmp_path / "credentials").write_text(text)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    clean |= {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
              "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_EC2_METADATA_DISABLED": "true",
              "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _SIGNING_PROBE], env=clean, capture_output=True,
                         text=True, timeout=120)
    assert f"Credential={key_id}/" in out.stdout, (out.stdout, out.stderr[-2000:])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_mlflow_allowed_hosts_are_exact_names(overlay):
    from mlflow.server.security_utils import is_allowed_host_header

    c = objects(overlay)["Deployment/mlflow"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    allowed = [h.strip() for h in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    assert not [h for h in allowed if "*" in h]
    ns = objects(overlay)["Deployment/mlflow"]["metadata"]["namespace"]
    for host in ("mlflow:5000", f"mlflow.{ns}.svc.cluster.local:5000", "localhost:5000",
                 "127.0.0.1:5000"):
        assert is_allowed_host_header(allowed, host), host
    for host in ("mlflow.attacker.example", "mlflow.attacker.example:5000", "evil:5000",
                 "mlflow"):
        assert not is_allowed_host_header(allowed, host), host
    old = ["mlflow", "mlflow:*", "mlflow.*", "localhost", "localhost:*", "127.0.0.1:*"]
    assert is_allowed_host_header(old, "mlflow.attacker.example")  # what the old list let in


# ------------------------------------------------------------------ filesystems and tokens


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_read_only_root_filesystems_with_writable_tmp(overlay):
    for where, pod in all_pods(overlay):
        empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for c in pod.get("initContainers", []) + pod["containers"]:
            assert c["securityContext"].get("readOnlyRootFilesystem") is True, (where, c["name"])
            if c["name"] == "wait-for-postgres":
                continue  # pg_isready writes nothing
            tmp = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp and tmp[0]["name"] in empty, (where, c["name"])
    for obj in platform(overlay):
        for cluster in k8s.ray_cluster_specs(obj):
            assert cluster["autoscalerOptions"]["securityContext"]["readOnlyRootFilesystem"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_account_tokens_only_where_used(overlay):
    """Only Ray heads and the console keep a token: the heads' autoscaler sidecar scales the
    worker pods, the console creates RayJobs (as its own ServiceAccount, whose Role allows only
    that). Nothing else calls the Kubernetes API."""
    heads = 0
    for where, pod in all_pods(overlay):
        if where == "Deployment/raylane-console:pod":
            assert pod["automountServiceAccountToken"] is True
            assert pod["serviceAccountName"] == "raylane-console"
        elif where.endswith(":head"):
            assert pod.get("automountServiceAccountToken") is not False, where
            heads += 1
        else:
            assert pod.get("automountServiceAccountToken") is False, where
    assert heads >= 4
