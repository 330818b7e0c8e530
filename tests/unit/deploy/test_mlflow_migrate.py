"""raylane.deploy.mlflow_migrate on SQLite files (no server): both schemas created at head, a
second run a no-op, and it refuses to run unconfigured. PostgreSQL, the advisory lock and two
runs at once: tests/integration/tracking/test_postgres_s3_tier.py."""

from __future__ import annotations

import sqlalchemy

from raylane.deploy import mlflow_migrate


def _tables(uri: str) -> set[str]:
    engine = sqlalchemy.create_engine(uri)
    try:
        return set(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrates_both_schemas_and_again_is_a_no_op(tmp_path):
    tracking, auth = f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'auth.db'}"
    log = mlflow_migrate.migrate(tracking, auth)
    assert log == ["tracking schema at head", "auth schema at head"]  # no lock, no CREATE on SQLite
    assert {"experiments", "runs", "model_versions", "alembic_version"} <= _tables(tracking)
    assert {"users", "alembic_version_auth"} <= _tables(auth)
    from mlflow.store.db.utils import _get_latest_schema_revision, _get_schema_version

    engine = sqlalchemy.create_engine(tracking)
    assert _get_schema_version(engine) == _get_latest_schema_revision()
    engine.dispose()
    assert mlflow_migrate.migrate(tracking, auth) == log  # nothing left to do, no error


def test_creates_no_database_but_a_postgres_one():
    assert mlflow_migrate.ensure_database("sqlite://", "sqlite:///x.db") is False


def test_main_needs_the_tracking_store(monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    assert mlflow_migrate.main([]) == 2
    assert "MLFLOW_BACKEND_STORE_URI" in capsys.readouterr().err
