"""raylane.deploy.mlflow_accounts without a server: what it reads from the environment and how
it refuses to run half-configured (the real server test:
tests/integration/deploy/test_mlflow_auth.py)."""

from __future__ import annotations

import pytest

from raylane.deploy import mlflow_accounts as accounts

ENV = {"RAYLANE_MLFLOW_WRITER_USERNAME": "w", "RAYLANE_MLFLOW_WRITER_PASSWORD": "wp",
       "RAYLANE_MLFLOW_READER_USERNAME": "r", "RAYLANE_MLFLOW_READER_PASSWORD": "rp"}


def test_writer_edits_and_reader_reads():
    writer, reader = accounts.accounts_from_env(ENV)
    assert (writer.username, writer.permission) == ("w", "EDIT")
    assert (reader.username, reader.permission) == ("r", "READ")
    assert "wp" not in repr(writer) and "rp" not in repr(reader)


@pytest.mark.parametrize("missing", sorted(ENV))
def test_every_variable_is_required(missing):
    with pytest.raises(ValueError, match=missing.rsplit("_", 1)[0]):
        accounts.accounts_from_env({k: v for k, v in ENV.items() if k != missing})


def test_one_account_cannot_be_both():
    with pytest.raises(ValueError, match="differ"):
        accounts.accounts_from_env({**ENV, "RAYLANE_MLFLOW_READER_USERNAME": "w"})


def test_main_refuses_without_admin_or_server(monkeypatch, capsys):
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    assert accounts.main([]) == 2  # no server address
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert accounts.main([]) == 2  # no admin
    assert "MLFLOW_TRACKING_USERNAME" in capsys.readouterr().err


def test_waiting_for_a_server_that_is_not_there_times_out():
    with pytest.raises(TimeoutError):
        accounts.wait_for_server("http://127.0.0.1:1", timeout_s=0)


def test_accounts_from_credentials_files(tmp_path):
    """The sidecar's form: each account as MLflow's credentials file (the mounted Secret)."""
    writer = tmp_path / "writer"
    writer.write_text("[mlflow]\nmlflow_tracking_username = w\nmlflow_tracking_password = p%x\n")
    env = {"RAYLANE_MLFLOW_WRITER_CREDENTIALS": str(writer),
           "RAYLANE_MLFLOW_READER_USERNAME": "r", "RAYLANE_MLFLOW_READER_PASSWORD": "rp"}
    w, r = accounts.accounts_from_env(env)
    assert (w.username, w.password, r.username) == ("w", "p%x", "r")
    writer.write_text("[mlflow]\nmlflow_tracking_username = w\n")
    with pytest.raises(ValueError, match="mlflow_tracking_password"):
        accounts.accounts_from_env(env)
    with pytest.raises(ValueError, match="no such credentials file"):
        accounts.accounts_from_env({**env,
                                    "RAYLANE_MLFLOW_WRITER_CREDENTIALS": str(tmp_path / "x")})
