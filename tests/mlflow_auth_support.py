"""A real `mlflow server --app-name basic-auth` with the auth config kuberay ships (its SQLite path
moved to a temp dir), its writer and reader accounts made by raylane.deploy.mlflow_accounts (the
account-setup Job's code), and the environment a pod gets from the credential Secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from conftest import BIN, free_port, wait_http
from process_state import restored_environ

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


@contextmanager
def auth_mlflow_server(home: Path) -> Iterator[str]:
    """The basic-auth MLflow server on a free port (state under ``home``); yields its URL and
    stops it on exit."""
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
