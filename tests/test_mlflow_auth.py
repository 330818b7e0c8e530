"""The Kubernetes platform's MLflow authentication, for real on this machine: `mlflow server
--app-name basic-auth` with the auth config kuberay ships (its SQLite path moved to a temp dir) and
the admin from the environment, then raylane.deploy.mlflow_accounts (the account-setup Job's code)
run against it, twice (idempotent). Then: the writer trains, registers and moves `champion`; the
reader loads the champion as a Serve replica does but may not register or move it; anonymous
requests are refused."""

from __future__ import annotations

import httpx
import pytest
from mlflow_auth_support import (
    ADMIN,
    READER,
    WRITER,
    as_user,
    auth_mlflow_server,
    run_account_setup,
    status_of,
)
from serving_support import publish_trained, train

from raylane.model.store import load_registered_model
from raylane.tracking.registry import CHAMPION, set_alias
from raylane.tracking.runs import mlflow_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    with auth_mlflow_server(tmp_path_factory.mktemp("mlflow-auth")) as url:
        yield url


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
