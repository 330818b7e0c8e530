"""The Kubernetes platform's MLflow authentication, for real on this machine: `mlflow server
--app-name basic-auth` with the auth config kuberay ships (its SQLite path moved to a temp dir) and
the admin from the environment, then raylane.deploy.mlflow_accounts (the account-setup Job's code)
run against it, twice (idempotent). Then: the writer trains, registers and moves `champion`; the
reader loads the champion as a Serve replica does but may not register or move it; anonymous
requests are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import BIN, free_port, wait_http
from process_state import restored_environ
from serving_support import publish_trained, train

from raylane.model_store import load_registered_model
from raylane.registry import CHAMPION, set_alias
from raylane.tracking import mlflow_client

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
AUTH_CONFIGMAP = ROOT / "kuberay" / "base" / "mlflow-auth-configmap.yaml"
ADMIN = ("admin", "admin-test-secret")
WRITER = ("raylane-trainer", "writer-test-secret")
READER = ("raylane-serving", "reader-test-secret")
CREDS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def shipped_ini(db: Path) -> str:
    ini = yaml.safe_load(AUTH_CONFIGMAP.read_text())["data"]["basic_auth.ini"]
    assert "database_uri = sqlite:////mlflow/auth/basic_auth.db" in ini
    return ini.replace("sqlite:////mlflow/auth/basic_auth.db", f"sqlite:///{db}")


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlflow-auth")
    (home / "basic_auth.ini").write_text(shipped_ini(home / "auth.db"))
    env = {k: v for k, v in os.environ.items() if k not in CREDS}
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(home / "basic_auth.ini"),
               MLFLOW_AUTH_ADMIN_USERNAME=ADMIN[0], MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
               MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-flask-key",
               MLFLOW_BACKEND_STORE_URI=f"sqlite:///{home / 'mlflow.db'}",
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    port = free_port()
    log = open(home / "server.log", "w")  # noqa: SIM115 - the server writes to it until teardown
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
         "--port", str(port), "--serve-artifacts", "--artifacts-destination",
         str(home / "artifacts"), "--workers", "1"],
        cwd=home, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def run_account_setup(url: str, admin=ADMIN) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": url,
           CREDS[0]: admin[0], CREDS[1]: admin[1],
           "RAYLANE_MLFLOW_WRITER_USERNAME": WRITER[0], "RAYLANE_MLFLOW_WRITER_PASSWORD": WRITER[1],
           "RAYLANE_MLFLOW_READER_USERNAME": READER[0], "RAYLANE_MLFLOW_READER_PASSWORD": READER[1]}
    return subprocess.run([sys.executable, "-m", "raylane.deploy.mlflow_accounts", "--wait-s",
                           "60"], env=env, capture_output=True, text=True, timeout=120)


@contextmanager
def as_user(user: tuple[str, str]) -> Iterator[None]:
    """os.environ with ``user``'s credentials, as the Secrets give them to a pod."""
    with restored_environ():
        os.environ[CREDS[0]], os.environ[CREDS[1]] = user
        yield


def status_of(exc: BaseException) -> int | None:
    text = str(exc)
    for code in (401, 403):
        if str(code) in text or ("PERMISSION_DENIED" in text and code == 403):
            return code
    return None


def test_accounts_writer_reader_and_anonymous(auth_server):
    url = auth_server
    # anonymous: refused before the accounts exist and after
    assert httpx.get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1").status_code == 401
    # a wrong admin password: the Job fails, nothing is created
    bad = run_account_setup(url, admin=(ADMIN[0], "wrong"))
    assert bad.returncode != 0
    first = run_account_setup(url)
    assert first.returncode == 0, first.stderr
    assert f"user {WRITER[0]}: created" in first.stdout
    assert WRITER[1] not in first.stdout + first.stderr  # no password in the Job's log
    again = run_account_setup(url)  # idempotent: re-running resets, does not fail
    assert again.returncode == 0, again.stderr
    assert f"user {READER[0]}: updated" in again.stdout

    trained = train("credit", n_estimators=10)
    with as_user(WRITER):
        # a run, its logged model and a registered version (the judge's promotion aside)
        published = publish_trained(url, "credit", trained, promote=False)
        version = str(published.version.version)
        client = mlflow_client(url)
        set_alias(client, "credit", CHAMPION, version)
        assert client.get_model_version_by_alias("credit", CHAMPION).version == version
        second = publish_trained(url, "credit", trained, promote=False)
        set_alias(client, "credit", CHAMPION, str(second.version.version))  # move the champion
        assert client.get_model_version_by_alias("credit", CHAMPION).version == str(
            second.version.version)
        set_alias(client, "credit", CHAMPION, version)

    with as_user(READER):
        model = load_registered_model("models:/credit@champion", url)  # what a replica does
        assert model.version == version and model.onnx_bytes
        client = mlflow_client(url)
        with pytest.raises(Exception) as denied:
            set_alias(client, "credit", CHAMPION, str(second.version.version))
        assert status_of(denied.value) == 403, denied.value
        with pytest.raises(Exception) as denied:
            client.create_model_version("credit", published.version.source,
                                        run_id=published.version.run_id)
        assert status_of(denied.value) == 403, denied.value
        with pytest.raises(Exception) as denied:
            client.create_run(client.get_experiment_by_name("serving-tests").experiment_id)
        assert status_of(denied.value) == 403, denied.value
    with as_user(WRITER):
        assert mlflow_client(url).get_model_version_by_alias("credit", CHAMPION).version == version

    # anonymous and wrong passwords: refused (401), reading included
    for auth in (None, (READER[0], "wrong")):
        resp = httpx.get(f"{url}/api/2.0/mlflow/registered-models/alias",
                         params={"name": "credit", "alias": CHAMPION}, auth=auth)
        assert resp.status_code == 401, resp.text
    resp = httpx.get(f"{url}/api/2.0/mlflow/registered-models/alias",
                     params={"name": "credit", "alias": CHAMPION}, auth=READER)
    assert resp.status_code == 200
