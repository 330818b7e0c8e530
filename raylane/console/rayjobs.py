"""Training jobs on Kubernetes: the console creates a RayJob through the Kubernetes API with its
ServiceAccount (a Role allowing create/get/list/watch of ``rayjobs`` in one namespace), instead of
holding the jobs cluster's Ray token. KubeRay submits the job to the RayCluster the RayJob's
``clusterSelector`` names (``submissionMode: HTTPMode``: the operator itself, no submitter pod).

The RayJob is rendered from a fixed template: the entrypoint is the one ``ray job submit`` gets
locally (:func:`raylane.console.jobs.entrypoint`: a config of ``tune_configs/`` by name, the
allowlisted overrides, ``timeout``), with ``activeDeadlineSeconds`` after that deadline. Nothing
else of the body comes from the page.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import yaml

from raylane.config import ConfigError
from raylane.console.jobs import (
    JobState,
    Limits,
    RayUnreachable,
    bounded,
    configs,
    deadline_s,
    entrypoint,
    job_env,
    parse_overrides,
)
from raylane.model.tags import JOB_BY, JOB_CONFIG, JOB_DEADLINE, JOB_DEADLINE_S, JOB_STARTED_BY

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayjobs"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
LABEL = "raylane.io/job"
LABEL_VALUE = "console-train"  # what the console lists: only the jobs it created
BY_ANNOTATION = "raylane.io/by"  # an email is no label value
KILL_AFTER_S = 60  # timeout's SIGKILL after its SIGTERM
GRACE_S = 120  # the operator's hard stop comes after timeout's
KEEP_SUCCEEDED_S = 3600  # the RayJob (its status) stays this long for the page to show
KEEP_FAILED_S = 86400


def render_rayjob(config: Path, overrides: list[str], who: str, *, folder: Path,
                  cluster: str, tracking_uri: str = "", limits: Limits | None = None,
                  now: datetime | None = None) -> dict:
    """The RayJob that runs ``config`` (one of ``folder``'s) with ``overrides`` (what
    :func:`~raylane.console.jobs.parse_overrides` accepted) on the RayCluster ``cluster``.
    Raises ConfigError before anything is rendered for any other config, or an override
    outside the console's allowlist (checked again here: this body runs on the jobs cluster with
    its writer account)."""
    limits = limits or Limits.from_env()
    if config.resolve() not in {p.resolve() for p in configs(folder)}:
        raise ConfigError(f"config: {config} is not one of the configs in {folder}")
    overrides = parse_overrides("\n".join(overrides), config, limits)
    overrides = bounded(config, overrides, limits)
    deadline = deadline_s(config, overrides, limits)
    ends = (now or datetime.now(UTC)).timestamp() + deadline
    # the job runs in the image's WORKDIR, which holds tune_configs/: the config by its name
    # there, whatever the console's own RAYLANE_TUNE_CONFIGS
    command = entrypoint(Path.cwd() / "tune_configs" / config.name, overrides, root=Path.cwd(),
                         deadline=deadline)
    env = {"PYTHONUNBUFFERED": "1", **job_env(tracking_uri)}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {
            "generateName": "raylane-train-",
            "labels": {"app.kubernetes.io/part-of": "raylane",
                       "app.kubernetes.io/name": "raylane-train", LABEL: LABEL_VALUE},
            "annotations": {BY_ANNOTATION: who, "raylane.io/config": config.name},
        },
        "spec": {
            "clusterSelector": {"ray.io/cluster": cluster},
            "submissionMode": "HTTPMode",
            "entrypoint": command,
            "runtimeEnvYAML": yaml.safe_dump({"env_vars": env}, sort_keys=True),
            "metadata": {JOB_STARTED_BY: "train", JOB_CONFIG: config.name, JOB_BY: who,
                         JOB_DEADLINE_S: str(deadline),
                         JOB_DEADLINE: datetime.fromtimestamp(ends, UTC).isoformat(
                             timespec="seconds")},
            "activeDeadlineSeconds": deadline + KILL_AFTER_S + GRACE_S,
            # the cluster is not the job's: only the RayJob goes, once the page had time
            "deletionStrategy": {"deletionRules": [
                {"condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": KEEP_SUCCEEDED_S},
                 "policy": "DeleteSelf"},
                {"condition": {"jobStatus": "FAILED", "ttlSeconds": KEEP_FAILED_S},
                 "policy": "DeleteSelf"},
                {"condition": {"jobDeploymentStatus": "Failed", "ttlSeconds": KEEP_FAILED_S},
                 "policy": "DeleteSelf"},
            ]},
        },
    }


@dataclass(frozen=True)
class KubeApi:
    """The Kubernetes API as the pod's ServiceAccount (in-cluster: the API server's Service
    address, the mounted token read per call since kubelet rotates it, the cluster's CA)."""

    server: str
    namespace: str
    token_path: Path = SA_DIR / "token"
    ca_path: Path | None = SA_DIR / "ca.crt"
    timeout_s: float = 10.0

    @classmethod
    def in_cluster(cls, namespace: str | None = None, timeout_s: float = 10.0) -> KubeApi:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get(
            "KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise RayUnreachable("RAYLANE_JOB_BACKEND=kubernetes needs the Kubernetes API: "
                                 "KUBERNETES_SERVICE_HOST is not set (not in a pod?)")
        if not namespace:
            try:
                namespace = (SA_DIR / "namespace").read_text().strip()
            except OSError:
                raise RayUnreachable("no namespace: set RAYLANE_JOB_NAMESPACE or mount the "
                                     "ServiceAccount token") from None
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", namespace, timeout_s=timeout_s)

    def _url(self, name: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{self.server}{path}/{name}" if name else f"{self.server}{path}"

    def _call(self, method: str, url: str, **kw) -> dict:
        try:
            token = self.token_path.read_text().strip()
        except OSError as exc:
            raise RayUnreachable(f"no ServiceAccount token at {self.token_path}: {exc}") from None
        verify: str | bool = str(self.ca_path) if self.ca_path else True
        try:
            r = httpx.request(method, url, headers={"Authorization": f"Bearer {token}"},
                              verify=verify, timeout=self.timeout_s, **kw)
        except httpx.HTTPError as exc:
            raise RayUnreachable(f"Kubernetes API {self.server}: {exc}") from None
        if r.status_code >= 400:
            try:
                why = r.json().get("message") or r.text
            except ValueError:
                why = r.text
            raise RayUnreachable(f"Kubernetes API answered {r.status_code}: {why[:300]}")
        return r.json()

    def create(self, body: dict) -> dict:
        return self._call("POST", self._url(), json=body)

    def get(self, name: str) -> dict:
        return self._call("GET", self._url(name))

    def list(self, selector: str) -> list[dict]:
        return self._call("GET", self._url(), params={"labelSelector": selector})["items"]


def submit(api: KubeApi, config: Path, overrides: list[str], who: str, *, folder: Path,
           cluster: str, tracking_uri: str = "", limits: Limits | None = None) -> str:
    """Render (ConfigError before anything is sent), create; the RayJob's name."""
    body = render_rayjob(config, overrides, who, folder=folder, cluster=cluster,
                         tracking_uri=tracking_uri, limits=limits)
    return api.create(body)["metadata"]["name"]


def _status(obj: dict) -> str:
    status = obj.get("status") or {}
    if status.get("jobStatus"):
        return status["jobStatus"]
    return "FAILED" if status.get("jobDeploymentStatus") == "Failed" else "PENDING"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def job_state(api: KubeApi, name: str) -> JobState:
    """The RayJob's status; its log is the Ray job's (the RBAC role reads no pod logs)."""
    obj = api.get(name)
    status = obj.get("status") or {}
    message = status.get("message") or status.get("reason") or ""
    return JobState(job_id=name, status=_status(obj), message=message,
                    entrypoint=obj["spec"].get("entrypoint", ""),
                    started=_time(status.get("startTime")), ended=_time(status.get("endTime")),
                    log=(f"Ray job {status.get('jobId', '(not yet submitted)')} on "
                         f"{status.get('rayClusterName', '?')}: its log is in the cluster's Ray "
                         "dashboard (kubectl logs of the head pod)."))


def recent_jobs(api: KubeApi, limit: int = 20) -> pd.DataFrame:
    """The newest ``limit`` RayJobs the console created in its namespace."""
    rows = [{"job": o["metadata"]["name"], "status": _status(o),
             "started": _time((o.get("status") or {}).get("startTime")),
             "ended": _time((o.get("status") or {}).get("endTime")),
             "by": (o["metadata"].get("annotations") or {}).get(BY_ANNOTATION, ""),
             "entrypoint": o["spec"].get("entrypoint", "")}
            for o in api.list(f"{LABEL}={LABEL_VALUE}")]
    frame = pd.DataFrame(rows, columns=["job", "status", "started", "ended", "by",
                                        "entrypoint"])
    return frame.sort_values("started", ascending=False, na_position="first").head(limit)
