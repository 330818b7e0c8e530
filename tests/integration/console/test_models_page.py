"""The console's Models page (Streamlit AppTest) against a real `mlflow server --app-name
basic-auth` with the platform's reader and writer accounts, two versions published by the
training job's own publish(), and a real Ray Serve replica serving `champion`.

Promote without write credentials is refused (the page is read-only and says why; MLflow
answers 403); with them the alias moves, who and why are recorded on both versions, and the
replica swaps to the new champion (it polls the alias)."""

from __future__ import annotations

import getpass
import time

import httpx
import pytest
from support import serving as ss
from support.console import click_promote, models_page
from support.mlflow_server import READER, WRITER, as_user, mlflow_server, run_account_setup

from raylane.console import versions as reg
from raylane.console.registry_access import NotAllowed, mlflow_errors
from raylane.tracking import plots
from raylane.tracking.registry import CHAMPION, set_alias
from raylane.tracking.runs import RunLog, mlflow_client

pytestmark = pytest.mark.slow
ROW = {"Seniority": 9, "Home": "rent", "Time": 60, "Age": 30, "Marital": "married",
       "Records": "no", "Job": "freelance", "Expenses": 73, "Income": 129, "Assets": 0,
       "Debt": 0, "Amount": 800, "Price": 846}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The auth server with two versions (v1 champion, v2 challenger) and a replica of
    `models:/credit@champion` that reads the registry as the reader account."""
    with mlflow_server(tmp_path_factory.mktemp("console-auth"), auth=True) as server:
        url = server.url
        setup = run_account_setup(url)
        assert setup.returncode == 0, setup.stderr
        with as_user(WRITER):
            for seed in (0, 1):
                trained = ss.train("credit", n_estimators=10 + 10 * seed, seed=seed)
                published = ss.publish_trained(url, "credit", trained, promote=False)
                fig, _ = plots.feature_importance(trained.pipeline, trained.data, trained.metric,
                                                  seed, max_rows=300)
                RunLog(mlflow_client(url), published.version.run_id).figure(
                    fig, "feature_importance")
            set_alias(mlflow_client(url), "credit", CHAMPION, "1")
        with as_user(READER), ss.ray_serve(num_cpus=2) as base:  # replicas inherit the reader
            ss.deploy("credit", ss.settings(url, "models:/credit@champion", poll_interval_s=1),
                      ray_actor_options={"num_cpus": 0.5})
            yield url, base


def served_version(base: str) -> str:
    response = httpx.post(f"{base}/predict", json={"records": [ROW]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def test_promote_needs_write_credentials_and_serving_swaps(stack):
    url, base = stack
    assert served_version(base) == "1"

    reader = models_page(url, READER)
    assert reader.metric[0].value == "v1" and reader.metric[1].value == "v2"
    locked = [w.value for w in reader.warning if "Read-only" in w.value]
    assert locked and "only READ on registered model 'credit'" in locked[0], \
        [w.value for w in reader.warning]
    assert reader.selectbox(key="models_target").disabled
    assert next(b for b in reader.button if b.label == "Move champion").disabled
    # what the button runs, run anyway with the reader's credentials: MLflow refuses (403)
    with as_user(READER), pytest.raises(NotAllowed, match="403"), mlflow_errors(10):
        reg.promote(mlflow_client(url), "credit", "2", READER[0], "try it")
    with as_user(WRITER):
        client = mlflow_client(url)
        assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == "1"
    assert served_version(base) == "1"

    writer = models_page(url, WRITER)
    assert not [w for w in writer.warning if "Read-only" in w.value]
    assert len(writer.get("image")) == 2  # both versions' feature importance, side by side
    writer = click_promote(writer, url, WRITER, "2", "v2 scores better on last week's rows")
    assert any("v2 is champion (was v1)" in s.value for s in writer.success), \
        [e.value for e in writer.error]
    assert writer.metric[0].value == "v2"
    with as_user(WRITER):
        client = mlflow_client(url)
        assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == "2"
        new, old = (client.get_model_version("credit", v).tags for v in ("2", "1"))
    # the person signed in to the console, not the console's MLflow account
    assert new[reg.PROMOTED_BY] == f"{getpass.getuser()}@localhost"
    assert new[reg.PROMOTED_FROM] == "1"
    assert new[reg.PROMOTED_WHY] == "v2 scores better on last week's rows"
    assert old[reg.DEMOTED_BY] == new[reg.PROMOTED_BY] and old[reg.DEMOTED_FOR] == "2"

    deadline = time.monotonic() + 90
    while served_version(base) != "2":
        assert time.monotonic() < deadline, "serving did not swap to v2"
        time.sleep(0.5)
