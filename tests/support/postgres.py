"""A throwaway PostgreSQL for tests: Debian's server binaries, a cluster initialised in a fresh
temp directory, listening on 127.0.0.1 on a free port only (its Unix socket in that directory),
with one database and a password user; stopped and deleted when the context ends.

PostgreSQL refuses to run as root, so when the tests run as root the cluster is initialised and
run as the ``postgres`` OS user (Debian's package creates it) and its directory is given to that
user. ``make test`` installs the package where it is missing (the ``.postgres`` target).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from support.net import free_port


def bindir() -> Path:
    """Where Debian's PostgreSQL server programs are (newest major version), or on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise FileNotFoundError("PostgreSQL's initdb not found: `make .venv/.postgres` installs "
                                "Debian's postgresql")
    return Path(initdb).resolve().parent


@dataclass(frozen=True)
class Postgres:
    """A running cluster: where it listens and the test database's credentials."""

    port: int
    database: str
    user: str
    password: str
    home: Path
    pid: int

    def uri(self, database: str | None = None, driver: str = "postgresql") -> str:
        """A SQLAlchemy URL for ``database`` (the test database unless named)."""
        return (f"{driver}://{self.user}:{self.password}@127.0.0.1:{self.port}/"
                f"{database or self.database}")

    def create_database(self, name: str) -> str:
        """Another database owned by the test user (MLflow's auth store, say); its URL."""
        with _admin(self) as cur:
            cur.execute(f'CREATE DATABASE "{name}" OWNER "{self.user}"')
        return self.uri(name)


def _run_as() -> dict:
    """Popen arguments that drop root to the ``postgres`` user (nothing when not root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@contextmanager
def _admin(pg: Postgres):
    """A superuser cursor over the cluster's Unix socket (trusted: only the socket's owner and
    root can reach it), autocommit."""
    conn = psycopg2.connect(host=str(pg.home), port=pg.port, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _wait_ready(home: Path, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log = (home / "server.log").read_text()[-2000:]
            raise RuntimeError(f"postgres exited with {proc.returncode}:\n{log}")
        try:
            psycopg2.connect(host=str(home), port=port, user="postgres", dbname="postgres",
                             connect_timeout=2).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(proc: subprocess.Popen) -> None:
    """Fast shutdown (SIGINT to the postmaster); the whole process group killed if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError):  # no backend outlives the postmaster
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def postgres(database: str = "mlflow", user: str = "raylane",
             password: str = "pg-test-secret", timeout: float = 60) -> Iterator[Postgres]:
    """A fresh cluster with ``database`` owned by ``user`` (password authentication over TCP;
    CREATEDB, as the migrations create basic auth's database)."""
    home = Path(tempfile.mkdtemp(prefix="raylane-pg-"))
    as_user = _run_as()
    proc: subprocess.Popen | None = None
    try:
        if as_user:
            os.chown(home, as_user["user"], as_user["group"])
        bin_ = bindir()
        subprocess.run([str(bin_ / "initdb"), "-D", str(home / "data"), "-U", "postgres",
                        "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
                        "-E", "UTF8", "--locale=C"],
                       cwd=home, check=True, capture_output=True, text=True, **as_user)
        port = free_port()
        with open(home / "server.log", "w") as log:
            if as_user:
                os.chown(home / "server.log", as_user["user"], as_user["group"])
            proc = subprocess.Popen(
                [str(bin_ / "postgres"), "-D", str(home / "data"), "-p", str(port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={home}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],  # throwaway data: durability buys nothing
                cwd=home, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                **as_user)
        _wait_ready(home, port, proc, timeout)
        pg = Postgres(port, database, user, password, home, proc.pid)
        with _admin(pg) as cur:
            cur.execute(f"CREATE ROLE \"{user}\" LOGIN CREATEDB PASSWORD %s", (password,))
            cur.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
        yield pg
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(home, ignore_errors=True)
