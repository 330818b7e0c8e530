"""Roll out an overlay with a new image and wait until the RayService serves it (deploy.yml).

    python -m raylane.deploy.ci.rollout --overlay kuberay/overlays/prod \
        --image ghcr.io/acme/raylane --tag sha-0123abc [--serve-url URL] [--timeout 1800]

1. ``kubectl apply -k`` a kustomization that is the overlay with ``images:`` set to the new
   image (every ``raylane`` image of the overlay), once.
2. Waits until the RayService has seen the change (``observedGeneration``), its active cluster
   runs the new image, no cluster is pending and every Serve application is RUNNING. KubeRay's
   NewCluster upgrade keeps the old cluster serving until the new one is healthy, so a stuck or
   failed rollout leaves the old one in place: the script then applies nothing more and fails
   with the RayService's status.
3. Smoke-tests through the Service (``kubectl port-forward``, or ``--serve-url``):
   ``GET /v2/health/ready`` and one ``POST /predict``.

Exit codes: 0 rolled out, 1 failed or timed out (the RayService's status printed), 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

RAYSERVICE = "raylane-serve"
SERVE_SERVICE = "raylane-serve-serve-svc"
IMAGE_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"  # Docker's tag grammar
IMAGE_NAME = r"[a-z0-9][a-z0-9._/:-]*"  # lower case: registries refuse upper case
# Application states Ray Serve reports that do not get better by waiting.
FAILED_APP_STATES = {"DEPLOY_FAILED", "UNHEALTHY"}
SAMPLE_REQUEST = {"records": [{
    "Seniority": 9, "Home": "rent", "Time": 60, "Age": 30, "Marital": "married", "Records": "no",
    "Job": "freelance", "Expenses": 73, "Income": 129, "Assets": 0, "Debt": 0, "Amount": 800,
    "Price": 846}]}


class RolloutError(RuntimeError):
    """The rollout did not reach a serving state; the message carries the RayService's status."""


@dataclass
class Kubectl:
    """``kubectl`` in one namespace."""

    namespace: str
    binary: str = "kubectl"
    extra_env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run([self.binary, "-n", self.namespace, *args], capture_output=True,
                              text=True, timeout=timeout, env={**os.environ, **self.extra_env})
        if proc.returncode != 0:
            raise RolloutError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self.run("get", kind, name, "-o", "json"))


def overlay_image_names(overlay: Path) -> list[str]:
    """The names the overlay gives the raylane image (its ``images:`` entries' ``newName``)."""
    spec = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    names = {"raylane"} | {i["newName"] for i in spec.get("images", []) if i.get("newName")}
    return sorted(names)


def write_kustomization(overlay: Path, image: str, tag: str, into: Path) -> Path:
    """A kustomization in ``into`` that is ``overlay`` with every raylane image set to
    ``image:tag`` (kubectl has no `kustomize edit`)."""
    images = [{"name": name, "newName": image, "newTag": tag}
              for name in overlay_image_names(overlay)]
    rel = os.path.relpath(overlay.resolve(), into.resolve())
    spec = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [rel], "images": images}
    (into / "kustomization.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return into


def status_text(service: dict) -> str:
    """The RayService's status as the log shows it."""
    return json.dumps(service.get("status", {}), indent=2, sort_keys=True)


def _apps(status: dict | None) -> dict[str, str]:
    return {name: app.get("status", "")
            for name, app in ((status or {}).get("applicationStatuses") or {}).items()}


def _cluster_image(kubectl: Kubectl, name: str) -> str:
    cluster = kubectl.get("raycluster", name)
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]


def check(service: dict, kubectl: Kubectl, image: str) -> bool:
    """True when the new image serves; False while it may still get there; raises on a failure
    that waiting does not fix."""
    status = service.get("status") or {}
    if status.get("observedGeneration", 0) < service["metadata"].get("generation", 1):
        return False
    for which in ("pendingServiceStatus", "activeServiceStatus"):
        failed = {n: s for n, s in _apps(status.get(which)).items() if s in FAILED_APP_STATES}
        if failed:
            raise RolloutError(f"Serve application(s) {failed} on the {which[:-13]} cluster")
    active, pending = status.get("activeServiceStatus") or {}, status.get("pendingServiceStatus")
    if (pending or {}).get("rayClusterName") or not active.get("rayClusterName"):
        return False
    apps = _apps(active)
    if not apps or any(s != "RUNNING" for s in apps.values()):
        return False
    return _cluster_image(kubectl, active["rayClusterName"]) == image


def wait_ready(kubectl: Kubectl, image: str, timeout: float, poll: float = 5.0,
               clock: Callable[[], float] = time.monotonic) -> dict:
    """The RayService once ``image`` serves; RolloutError with its status otherwise."""
    deadline = clock() + timeout
    service: dict = {}
    while True:
        service = kubectl.get("rayservice", RAYSERVICE)
        try:
            if check(service, kubectl, image):
                return service
        except RolloutError as exc:
            raise RolloutError(f"rollout failed: {exc}\nRayService status:\n"
                               f"{status_text(service)}") from None
        if clock() > deadline:
            raise RolloutError(f"rollout stuck: {image} not serving after {timeout:.0f} s\n"
                               f"RayService status:\n{status_text(service)}")
        time.sleep(poll)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def smoke_test(base_url: str, request: dict, timeout: float = 120) -> dict:
    """``/v2/health/ready`` answers 200 (retried while the port-forward comes up), then one
    prediction succeeds; the prediction's JSON."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            code, text = _http(f"{base_url}/v2/health/ready")
            if code == 200:
                break
        except OSError as exc:
            code, text = 0, str(exc)
        if time.monotonic() > deadline:
            raise RolloutError(f"smoke test: /v2/health/ready answered {code}: {text[:500]}")
        time.sleep(1)
    code, text = _http(f"{base_url}/predict", request)
    if code != 200:
        raise RolloutError(f"smoke test: /predict answered {code}: {text[:500]}")
    answer = json.loads(text)
    if len(answer.get("predictions", [])) != len(request["records"]):
        raise RolloutError(f"smoke test: /predict gave no prediction per record: {text[:500]}")
    return answer


def port_forward(kubectl: Kubectl) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [kubectl.binary, "-n", kubectl.namespace, "port-forward", f"svc/{SERVE_SERVICE}",
         f"{port}:8000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **kubectl.extra_env})
    return proc, f"http://127.0.0.1:{port}"


def rollout(overlay: Path, image: str, tag: str, kubectl: Kubectl, timeout: float,
            serve_url: str | None = None, request: dict | None = None, poll: float = 5.0) -> dict:
    """Apply once, wait, smoke-test; the prediction the smoke test got."""
    with tempfile.TemporaryDirectory(prefix="raylane-rollout-") as tmp:
        applied = kubectl.run("apply", "-k", str(write_kustomization(overlay, image, tag,
                                                                      Path(tmp))), timeout=600)
    print(applied, end="", flush=True)
    service = wait_ready(kubectl, f"{image}:{tag}", timeout, poll)
    active = service["status"]["activeServiceStatus"]
    print(f"RayService {RAYSERVICE}: cluster {active['rayClusterName']} serves {image}:{tag}, "
          f"applications {_apps(active)}", flush=True)
    forward = None
    if not serve_url:
        forward, serve_url = port_forward(kubectl)
    try:
        answer = smoke_test(serve_url, request or SAMPLE_REQUEST)
    finally:
        if forward:
            forward.terminate()
            forward.wait(timeout=30)
    print(f"smoke test passed: /v2/health/ready 200; /predict -> {json.dumps(answer)[:300]}")
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", required=True, type=Path, help="e.g. kuberay/overlays/prod")
    parser.add_argument("--image", required=True, help="image name without tag")
    parser.add_argument("--tag", required=True, help="the image tag to roll out")
    parser.add_argument("--namespace", default="raylane")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the rollout")
    parser.add_argument("--serve-url", help="the Serve Service's URL (default: port-forward)")
    parser.add_argument("--request", type=Path, help="JSON body of the smoke test's /predict")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between status reads")
    args = parser.parse_args(argv)
    if not (args.overlay / "kustomization.yaml").is_file():
        print(f"error: --overlay: {args.overlay} has no kustomization.yaml", file=sys.stderr)
        return 2
    if ":" in args.image.rsplit("/", 1)[-1] or not re.fullmatch(IMAGE_NAME, args.image):
        print(f"error: --image: expected an image name without a tag, got {args.image!r}",
              file=sys.stderr)
        return 2
    if not re.fullmatch(IMAGE_TAG, args.tag):
        print(f"error: --tag: expected a Docker tag ({IMAGE_TAG}), got {args.tag!r}",
              file=sys.stderr)
        return 2
    request = json.loads(args.request.read_text()) if args.request else None
    try:
        rollout(args.overlay, args.image, args.tag, Kubectl(args.namespace), args.timeout,
                args.serve_url, request, args.poll)
    except RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
