"""A real `mlflow server` process: SQLite store and proxied artifacts under one directory, on a
free port that stays its own, so a test can stop it and start it again (an outage, a restart)
and clients configured with its URL carry on when it is back.

``store=`` runs it as the manifests deploy it instead: the tracking store (and basic auth's user
store) on PostgreSQL, artifacts on S3 (support.postgres, support.s3), still proxied by the
server so clients need no bucket credentials; :func:`db_upgrade` runs the migrations as the MLflow
pods' init container does, before the servers start.

``auth=True`` runs it as the Kubernetes platform does: ``--app-name basic-auth`` with the auth
config kuberay ships (its SQLite path moved into the directory), the admin from the environment;
:func:`run_account_setup` then makes the writer and reader accounts with
raylane.deploy.mlflow_accounts (the account-setup Job's code), and :func:`as_user` gives a test
the environment a pod gets from the credential Secrets. Its passwords are stored as
one-iteration PBKDF2 instead of scrypt (cheap_password_hash/sitecustomize.py): the same check
on every request, without its CPU cost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from support.environ import restored_environ
from support.net import free_port, wait_http
from support.paths import BIN, ROOT
from support.processes import stop_process

AUTH_CONFIGMAP = ROOT / "kuberay" / "base" / "mlflow-auth-configmap.yaml"
CHEAP_PASSWORD_HASH = Path(__file__).parent / "cheap_password_hash"  # see its sitecustomize.py
ADMIN = ("admin", "admin-test-secret")
WRITER = ("raylane-trainer", "writer-test-secret")
READER = ("raylane-serving", "reader-test-secret")
CREDS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def shipped_ini(database_uri: str) -> str:
    """kuberay's basic_auth.ini with its user database at ``database_uri``."""
    ini = yaml.safe_load(AUTH_CONFIGMAP.read_text())["data"]["basic_auth.ini"]
    lines = [line for line in ini.splitlines() if line.startswith("database_uri = ")]
    assert len(lines) == 1, ini
    return ini.replace(lines[0], f"database_uri = {database_uri}")


@dataclass(frozen=True)
class Store:
    """Where a server keeps things, as deployed: the tracking store's URL, the auth store's
    (the shipped config's form: no credentials, libpq takes PGUSER/PGPASSWORD from ``env``),
    the artifact root (``s3://bucket/prefix``) and the environment that reaches them."""

    backend_uri: str
    auth_uri: str
    artifacts: str
    env: dict[str, str]


def db_upgrade(store: Store, scratch: Path) -> subprocess.Popen:
    """raylane.deploy.mlflow_migrate against ``store`` (the MLflow pods' init container),
    started: the caller waits for it. ``scratch`` gets its auth config and log."""
    (scratch / "migrate.ini").write_text(shipped_ini(store.auth_uri))
    env = {**os.environ, **store.env, "MLFLOW_BACKEND_STORE_URI": store.backend_uri,
           "MLFLOW_AUTH_CONFIG_PATH": str(scratch / "migrate.ini")}
    with open(scratch / "migrate.log", "a") as log:
        return subprocess.Popen([sys.executable, "-m", "raylane.deploy.mlflow_migrate",
                                 "--wait-s", "30"], env=env, stdout=log, stderr=subprocess.STDOUT)


class MlflowServer:
    """One `mlflow server` under ``home``; :meth:`start` and :meth:`stop` as often as needed."""

    def __init__(self, home: Path, auth: bool = False, store: Store | None = None):
        self.home, self.auth, self.store, self.port = home, auth, store, free_port()
        home.mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def _command(self) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        backend = f"sqlite:///{self.home / 'mlflow.db'}"
        artifacts = str(self.home / "artifacts")
        auth_db = f"sqlite:///{self.home / 'auth.db'}"
        if self.store is not None:
            backend, artifacts, auth_db = (self.store.backend_uri, self.store.artifacts,
                                           self.store.auth_uri)
            env.update(self.store.env)
        cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--backend-store-uri", backend,
               "--artifacts-destination", artifacts, "--serve-artifacts",
               "--workers", "1"]
        if self.auth:
            (self.home / "basic_auth.ini").write_text(shipped_ini(auth_db))
            for key in CREDS:
                env.pop(key, None)
            env.update(MLFLOW_AUTH_CONFIG_PATH=str(self.home / "basic_auth.ini"),
                       MLFLOW_AUTH_ADMIN_USERNAME=ADMIN[0], MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN[1],
                       MLFLOW_FLASK_SERVER_SECRET_KEY="test-only-flask-key",
                       PYTHONPATH=os.pathsep.join(
                           p for p in (str(CHEAP_PASSWORD_HASH), env.get("PYTHONPATH")) if p))
            cmd[2:2] = ["--app-name", "basic-auth"]
        return cmd, env

    def start(self, timeout: float = 120) -> None:
        cmd, env = self._command()
        with open(self.home / "server.log", "a") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, cwd=self.home, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)  # its group: see kill()
        wait_http(f"{self.url}/health", timeout=timeout)

    def kill(self) -> None:
        """SIGKILL to the whole process group (`mlflow server` runs uvicorn as a child), as a
        pod dies: no graceful shutdown."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc, grace=30)
        self.proc = None


@contextmanager
def mlflow_server(home: Path, auth: bool = False,
                  store: Store | None = None) -> Iterator[MlflowServer]:
    """A started :class:`MlflowServer`, stopped on exit."""
    server = MlflowServer(home, auth=auth, store=store)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def run_account_setup(url: str, admin=ADMIN) -> subprocess.CompletedProcess:
    """raylane.deploy.mlflow_accounts against ``url``: the writer and reader accounts."""
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
    """401 or 403 if ``exc`` says so, else None."""
    text = str(exc)
    for code in (401, 403):
        if str(code) in text or ("PERMISSION_DENIED" in text and code == 403):
            return code
    return None
