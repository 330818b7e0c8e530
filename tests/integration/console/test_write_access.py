"""The Models page's "may these credentials promote?" asks MLflow's basic-auth app for the
current user's grants and writes nothing: a real `mlflow server --app-name basic-auth` with the
writer and reader accounts the account-setup Job makes. The old probe set `champion` again to
the version it had just read, reverting a promotion that landed in between."""

from __future__ import annotations

import pytest
from support.mlflow_server import READER, WRITER, as_user, mlflow_server, run_account_setup

from raylane.console import versions as reg
from raylane.tracking.registry import CHAMPION, set_alias
from raylane.tracking.runs import mlflow_client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """The auth server with a model of two versions, v1 champion, made by the writer."""
    with mlflow_server(tmp_path_factory.mktemp("auth-mlflow"), auth=True) as server:
        url = server.url
        setup = run_account_setup(url)
        assert setup.returncode == 0, setup.stderr
        with as_user(WRITER):
            client = mlflow_client(url)
            run = client.create_run(client.create_experiment("write-access"))
            client.create_registered_model("credit")
            for _ in range(2):
                client.create_model_version("credit", source=f"{run.info.artifact_uri}/model",
                                            run_id=run.info.run_id)
            set_alias(client, "credit", CHAMPION, "1")
        yield url


def test_the_grants_say_who_may_promote(registry):
    with as_user(WRITER):
        # the writer created the model: MLflow grants its creator MANAGE (which may update)
        assert reg.write_access(mlflow_client(registry), "credit") == (
            True, "MANAGE on registered model 'credit'")
    with as_user(READER):
        allowed, why = reg.write_access(mlflow_client(registry), "credit")
        assert not allowed and why == "only READ on registered model 'credit'"
    with as_user((WRITER[0], "wrong-password")):
        allowed, why = reg.write_access(mlflow_client(registry), "credit")
        assert not allowed and "401" in why


def test_the_check_never_reverts_a_concurrent_promotion(registry, monkeypatch):
    """A promotion to v2 lands right after the check read the champion (v1), as it would
    from another console or a training job: it must stay."""
    real_get_alias = reg.get_alias

    def read_then_someone_promotes(client, name, alias):
        current = real_get_alias(client, name, alias)
        if alias == CHAMPION:
            set_alias(client, name, CHAMPION, "2")
        return current

    monkeypatch.setattr(reg, "get_alias", read_then_someone_promotes)
    writes = []

    def recorded_set_alias(*args):
        writes.append(args[1:])
        set_alias(*args)

    monkeypatch.setattr(reg, "set_alias", recorded_set_alias)
    with as_user(WRITER):
        client = mlflow_client(registry)
        set_alias(client, "credit", CHAMPION, "1")
        assert reg.write_access(client, "credit")[0]
        if not writes:  # the check read nothing to race with: the promotion lands now
            set_alias(client, "credit", CHAMPION, "2")
        assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == "2"
    assert writes == []  # the check wrote nothing
