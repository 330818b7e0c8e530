"""MLflow's database migrations, run once however many MLflow pods start at the same time.

Every MLflow pod runs this as an init container before `mlflow server`. It takes a PostgreSQL
advisory lock in the tracking database, so concurrent runs go one after the other; the first
creates basic auth's database if it is missing and brings both schemas to the installed
MLflow's head (`mlflow db upgrade`, `python -m mlflow.server.auth db upgrade`, called
in-process so no database URI shows on a command line); the others find nothing to do. Then
each server only checks the schema at start and never migrates concurrently.

    MLFLOW_BACKEND_STORE_URI   the tracking store (the server's own variable)
    MLFLOW_AUTH_CONFIG_PATH    basic auth's config: its ``database_uri`` is the user store

    python -m raylane.deploy.mlflow_migrate [--wait-s 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import sqlalchemy

# pg_advisory_lock's key: any constant all the pods agree on
LOCK_KEY = 0x7261796C616E65  # "raylane"


def _engine(uri: str, **kwargs) -> sqlalchemy.engine.Engine:
    return sqlalchemy.create_engine(uri, pool_pre_ping=True, **kwargs)


def wait_for_database(uri: str, timeout_s: float) -> None:
    """Until the database at ``uri`` accepts a connection."""
    deadline = time.monotonic() + timeout_s
    engine = _engine(uri)
    try:
        while True:
            try:
                with engine.connect():
                    return
            except sqlalchemy.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
    finally:
        engine.dispose()


def ensure_database(admin_uri: str, uri: str) -> bool:
    """Create ``uri``'s PostgreSQL database through ``admin_uri``'s connection if it is missing
    (the account needs CREATEDB). Whether it was created."""
    url = sqlalchemy.engine.make_url(uri)
    if not url.get_backend_name().startswith("postgresql"):
        return False
    engine = _engine(admin_uri, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": url.database}).first()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(url.database)
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        engine.dispose()


def migrate(tracking_uri: str, auth_uri: str | None) -> list[str]:
    """Both schemas to head under the advisory lock; one log line per step."""
    from mlflow.db import upgrade as tracking_upgrade
    from mlflow.server.auth.db.cli import upgrade as auth_upgrade

    log = []
    engine = _engine(tracking_uri, isolation_level="AUTOCOMMIT")  # no transaction left open
    postgres = engine.dialect.name == "postgresql"
    try:
        with engine.connect() as lock:
            if postgres:  # held by this connection until it closes, even if we die
                lock.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
                log.append("migration lock taken")
            tracking_upgrade.callback(tracking_uri)
            log.append("tracking schema at head")
            if auth_uri:
                if ensure_database(tracking_uri, auth_uri):
                    log.append(f"created database {sqlalchemy.engine.make_url(auth_uri).database}")
                auth_upgrade.callback(url=auth_uri, revision="head")
                log.append("auth schema at head")
            if postgres:
                lock.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
    finally:
        engine.dispose()
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wait-s", type=float, default=300.0,
                        help="how long to wait for the database to accept connections")
    args = parser.parse_args(argv)
    tracking_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    if not tracking_uri:
        print("MLFLOW_BACKEND_STORE_URI (the tracking store) must be set", file=sys.stderr)
        return 2
    auth_uri = None
    if os.environ.get("MLFLOW_AUTH_CONFIG_PATH"):
        from mlflow.server.auth.config import read_auth_config

        auth_uri = read_auth_config().database_uri
    wait_for_database(tracking_uri, args.wait_s)
    for line in migrate(tracking_uri, auth_uri):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
