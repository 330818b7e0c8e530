"""Training jobs as RayJobs (raylane/console/rayjobs.py): the rendered body against KubeRay's
vendored CRD and its operator's rules, the allowlist checked before anything is sent, and the
calls over real HTTP to a stand-in API server (a local server that records what it gets: there
is no Kubernetes API server here)."""

from __future__ import annotations

import json
import shlex
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from support import k8s
from support.paths import ROOT

from raylane.config import ConfigError
from raylane.console import job_backend, jobs, rayjobs
from raylane.console.settings import ConsoleSettings
from raylane.model.tags import JOB_BY, JOB_DEADLINE_S

FOLDER = ROOT / "tune_configs"
CONFIG = FOLDER / "credit_xgboost.yaml"
LIMITS = jobs.Limits(max_samples=20, max_time_budget_s=600, margin_s=300)
ON_CLUSTER = k8s.load_file(ROOT / "kuberay" / "jobs" / "rayjob-train-on-cluster.yaml")[0]


def render(overrides=("tune.num_samples=8",), **kw) -> dict:
    return rayjobs.render_rayjob(CONFIG, list(overrides), "ana@example.com", folder=FOLDER,
                                 cluster="raylane", tracking_uri="http://mlflow:5000",
                                 limits=LIMITS, **kw)


def test_the_rendered_rayjob_is_valid_for_kuberay():
    body = render()
    assert k8s.crd_errors(body) == []
    assert k8s.rayjob_operator_errors(body["spec"]) == []
    spec = body["spec"]
    # the cluster the on-cluster manifest names, submitted by the operator itself (no pod)
    assert spec["clusterSelector"] == ON_CLUSTER["spec"]["clusterSelector"]
    assert spec["submissionMode"] == "HTTPMode" and "submitterPodTemplate" not in spec
    assert "rayClusterSpec" not in spec and not spec.get("shutdownAfterJobFinishes")


def test_the_validation_can_fail():
    body = render()
    body["spec"]["entrypointt"] = body["spec"].pop("entrypoint")
    assert k8s.crd_errors(body)
    body = render()
    body["spec"]["activeDeadlineSeconds"] = "soon"
    assert k8s.crd_errors(body)


def test_the_entrypoint_is_the_fixed_template_with_a_deadline():
    body = render(["tune.num_samples=8", "tune.search_alg=optuna"])
    args = shlex.split(body["spec"]["entrypoint"])
    deadline = int(body["spec"]["metadata"][JOB_DEADLINE_S])
    # the search's budget (at most the console's) plus the margin
    budget = jobs.validate(CONFIG, jobs.bounded(CONFIG, ["tune.num_samples=8"], LIMITS))
    assert deadline == int(budget.tune.time_budget_s + 300) and deadline <= 600 + 300
    assert args[:4] == ["timeout", "--kill-after=60", str(deadline), "python"]
    # the config by its name in the image's WORKDIR, the overrides and the console's caps
    assert args[4:8] == ["-m", "ray_jobs.train_pipeline", "--config",
                         "tune_configs/credit_xgboost.yaml"]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert sets[:2] == ["tune.num_samples=8", "tune.search_alg=optuna"]
    # the operator's hard stop comes after timeout's SIGTERM and SIGKILL
    assert body["spec"]["activeDeadlineSeconds"] > deadline + 60
    assert body["spec"]["metadata"][JOB_BY] == "ana@example.com"
    assert body["metadata"]["annotations"]["raylane.io/by"] == "ana@example.com"
    env = yaml.safe_load(body["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


@pytest.mark.parametrize("override", [
    "data.path=https://attacker.example/x.csv", "mlflow.tracking_uri=http://attacker.example/",
    "tune.storage_path=/tmp/elsewhere", "tune.num_samples=1000000",
])
def test_an_override_outside_the_allowlist_is_refused_before_anything_is_sent(override, api):
    server, kube = api
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        rayjobs.submit(kube, CONFIG, [override], "ana", folder=FOLDER, cluster="raylane",
                       limits=LIMITS)
    with pytest.raises(ConfigError, match="not one of the configs"):
        rayjobs.submit(kube, ROOT / "serve" / "config.yaml", [], "ana", folder=FOLDER,
                       cluster="raylane", limits=LIMITS)
    assert server.requests == []


class StandIn(BaseHTTPRequestHandler):
    """Answers the three RayJob calls the way the API server does; records each request."""

    def log_message(self, *args):
        pass

    def _answer(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.requests.append(("POST", self.path, self.headers["authorization"], body))
        if self.headers["authorization"] != "Bearer sa-token":
            return self._answer(403, {"kind": "Status", "message": "rayjobs is forbidden"})
        body["metadata"]["name"] = body["metadata"]["generateName"] + "x7k2p"
        self.server.created[body["metadata"]["name"]] = body
        self._answer(201, body)

    def do_GET(self):
        self.server.requests.append(("GET", self.path, self.headers["authorization"], None))
        name = self.path.split("?")[0].rsplit("/", 1)[1]
        if name == "rayjobs":
            return self._answer(200, {"kind": "RayJobList", "items": list(
                self.server.created.values())})
        obj = dict(self.server.created[name], status={
            "jobStatus": "RUNNING", "jobDeploymentStatus": "Running", "jobId": name,
            "rayClusterName": "raylane", "startTime": "2026-12-05T00:00:00Z"})
        self._answer(200, obj)


@pytest.fixture
def api(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    server.requests, server.created = [], {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    kube = rayjobs.KubeApi(f"http://127.0.0.1:{server.server_address[1]}", "raylane",
                           token_path=token, ca_path=None)
    try:
        yield server, kube
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_submit_creates_the_rendered_rayjob_as_the_service_account(api):
    server, kube = api
    name = rayjobs.submit(kube, CONFIG, ["tune.num_samples=8"], "ana", folder=FOLDER,
                          cluster="raylane", tracking_uri="http://mlflow:5000", limits=LIMITS)
    assert name == "raylane-train-x7k2p"
    ((method, path, auth, body),) = server.requests
    assert (method, path, auth) == ("POST", "/apis/ray.io/v1/namespaces/raylane/rayjobs",
                                    "Bearer sa-token")
    assert k8s.crd_errors(body) == []
    state = rayjobs.job_state(kube, name)
    assert (state.status, state.started) == ("RUNNING", datetime(2026, 12, 5, tzinfo=UTC))
    assert state.entrypoint == body["spec"]["entrypoint"] and not state.finished
    recent = rayjobs.recent_jobs(kube)
    assert recent["job"].tolist() == [name] and recent["by"].tolist() == ["ana"]
    assert server.requests[-1][1] == (
        "/apis/ray.io/v1/namespaces/raylane/rayjobs?labelSelector=raylane.io%2Fjob%3Dconsole-train")


def test_a_refusal_of_the_api_server_is_reported_not_raised_as_a_traceback(api, tmp_path):
    _, kube = api
    (tmp_path / "token").write_text("stale")
    with pytest.raises(jobs.RayUnreachable, match="403: rayjobs is forbidden"):
        rayjobs.submit(kube, CONFIG, [], "ana", folder=FOLDER, cluster="raylane",
                       limits=LIMITS)


def test_the_backend_is_picked_by_settings(monkeypatch):
    local = ConsoleSettings.from_env({})
    assert local.job_backend == "ray"
    assert isinstance(job_backend.from_settings(local), job_backend.RayBackend)
    on_k8s = ConsoleSettings.from_env({"RAYLANE_JOB_BACKEND": "kubernetes",
                                       "RAYLANE_JOB_NAMESPACE": "team-a"})
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(jobs.RayUnreachable, match="KUBERNETES_SERVICE_HOST"):
        job_backend.from_settings(on_k8s)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    backend = job_backend.from_settings(on_k8s)
    assert isinstance(backend, job_backend.KubernetesBackend)
    assert backend.api.server == "https://10.96.0.1:443" and backend.api.namespace == "team-a"
    with pytest.raises(ValueError, match="job_backend"):
        ConsoleSettings.from_env({"RAYLANE_JOB_BACKEND": "ssh"})


def test_a_config_without_a_time_budget_gets_the_consoles(tmp_path):
    folder = tmp_path / "tune_configs"
    folder.mkdir()
    raw = yaml.safe_load(CONFIG.read_text())
    raw["tune"].pop("time_budget_s", None)
    (folder / "open.yaml").write_text(yaml.safe_dump(raw))
    body = rayjobs.render_rayjob(folder / "open.yaml", [], "ana", folder=folder,
                                 cluster="raylane", limits=LIMITS)
    args = shlex.split(body["spec"]["entrypoint"])
    assert "tune.time_budget_s=600" in args and args[2] == str(600 + 300)
    assert args[args.index("--config") + 1] == "tune_configs/open.yaml"


def test_the_page_in_kubernetes_mode_outside_a_pod_says_why_and_still_checks(tmp_path,
                                                                             monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("RAYLANE_JOB_BACKEND", "kubernetes")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    at = AppTest.from_file(str(ROOT / "console" / "pages" / "training.py"),
                           default_timeout=60).run()
    assert not at.exception, at.exception
    down = [e.value for e in at.error]
    assert any("the Kubernetes API" in e and "KUBERNETES_SERVICE_HOST" in e for e in down), down
    submit = next(b for b in at.button if b.label == "Submit to Ray")
    assert submit.disabled
    at.text_area(key="training_overrides").input("mlflow.tracking_uri=http://attacker/")
    next(b for b in at.button if b.label == "Check config").click().run()
    assert any("nothing was submitted" in e.value for e in at.error)
