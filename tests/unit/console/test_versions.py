"""The Models page's logic (raylane/console/versions.py) on a real SQLite MLflow store whose
versions carry the tags the training job writes, and the page itself through Streamlit's AppTest.
"""

from __future__ import annotations

import shutil

import pytest
from mlflow import MlflowClient
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest
from support.paths import ROOT

from raylane.console import versions as reg
from raylane.console.registry_access import Unreachable, connect, mlflow_errors
from raylane.tracking.registry import CHAMPION, set_alias

PAGE = str(ROOT / "console" / "pages" / "models.py")


def _version(client: MlflowClient, exp: str, name: str, *, gates: str = "passed",
             decision: str = "promoted", score: float = 0.8, champion: str = "none",
             reasons: str = "passed the gates") -> str:
    run = client.create_run(exp)
    client.set_tag(run.info.run_id, "raylane.gates", gates)
    client.set_tag(run.info.run_id, "raylane.parity", "passed")
    client.log_metric(run.info.run_id, "holdout_roc_auc", score)
    client.log_param(run.info.run_id, "best.max_depth", str(int(score * 100)))
    client.set_terminated(run.info.run_id)
    mv = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model",
                                     run_id=run.info.run_id, tags={
        "raylane.decision": decision, "raylane.decision.reasons": reasons,
        "raylane.judging.metric": "roc_auc", "raylane.judging.challenger": str(score),
        "raylane.holdout.roc_auc": str(score), "raylane.champion.version": champion,
        "raylane.parity.max_abs_diff": "1e-07", "raylane.family": "xgboost"})
    return str(mv.version)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Three versions as the training job leaves them: v1, v2 (champion), v3 (failed gates)."""
    tmp_path = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    exp = client.create_experiment("credit", artifact_location=str(tmp_path / "artifacts"))
    client.create_registered_model("credit")
    v1 = _version(client, exp, "credit", score=0.80)
    set_alias(client, "credit", CHAMPION, v1)
    v2 = _version(client, exp, "credit", score=0.85, champion=v1)
    set_alias(client, "credit", CHAMPION, v2)
    bad = _version(client, exp, "credit", gates="failed", decision="not promoted", score=0.5,
                   champion=v2, reasons="holdout roc_auc 0.5 < 0.75")
    return tmp_path / "mlflow.db", {"v1": v1, "v2": v2, "bad": bad}


@pytest.fixture()
def store(template, tmp_path):
    """A fresh copy of the template store (tests move aliases)."""
    db, versions = template
    shutil.copy(db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, MlflowClient(uri, uri), versions


def test_versions_are_paged_newest_first_with_their_tags(store):
    _uri, client, _v = store
    first, token = reg.versions_page(client, "credit", page_size=2)
    assert list(first.version) == [3, 2] and token
    rest, token2 = reg.versions_page(client, "credit", token, page_size=2)
    assert list(rest.version) == [1] and token2 is None
    assert first.iloc[1].aliases == "champion" and first.iloc[0].decision == "not promoted"
    assert first.iloc[0].score == 0.5 and first.iloc[0].reasons == "holdout roc_auc 0.5 < 0.75"


def test_a_version_that_failed_its_gates_is_never_promoted(store):
    _uri, client, v = store
    with pytest.raises(reg.Refused, match=r"failed its gates: holdout roc_auc 0\.5 < 0\.75"):
        reg.promote(client, "credit", v["bad"], "ana", "try it")
    assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == v["v2"]


def test_rollback_moves_champion_and_records_who_and_why_on_both(store):
    _uri, client, v = store
    champ = reg.version_detail(client, "credit", v["v2"])
    assert reg.rollback_target(champ) == v["v1"]
    with pytest.raises(reg.Refused, match="who you are and why"):
        reg.promote(client, "credit", v["v1"], "ana", "  ")
    assert reg.promote(client, "credit", v["v1"], "ana", "v2 misprices", "rollback") == v["v2"]
    assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == v["v1"]
    now, before = (client.get_model_version("credit", x).tags for x in (v["v1"], v["v2"]))
    assert now[reg.PROMOTED_BY] == "ana" and now[reg.PROMOTED_WHY] == "v2 misprices"
    assert now[reg.PROMOTED_FROM] == v["v2"] and now[reg.PROMOTED_HOW] == "rollback"
    assert before[reg.DEMOTED_BY] == "ana" and before[reg.DEMOTED_FOR] == v["v1"]
    with pytest.raises(reg.Refused, match="already champion"):
        reg.promote(client, "credit", v["v1"], "ana", "again")
    assert reg.write_access(client, "credit")[0]


def test_compare_puts_differing_parameters_first(store):
    _uri, client, v = store
    a, b = (reg.version_detail(client, "credit", x) for x in (v["v1"], v["v2"]))
    metrics, params = reg.compare(a, b)
    row = metrics.set_index("metric").loc["holdout roc_auc"]
    assert row["v1"] == 0.8 and row["v2"] == 0.85 and row["difference"] == pytest.approx(0.05)
    assert params.iloc[0]["parameter"] == "best.max_depth" and params.iloc[0]["differs"]
    assert reg.run_image(client, a.run_id) is None  # no plot logged: nothing, not an error


def test_unreachable_stores_are_reported_quickly(tmp_path):
    with pytest.raises(Unreachable, match="no MLflow store"):
        connect(f"sqlite:///{tmp_path / 'none.db'}", 2)
    with pytest.raises(Unreachable):
        connect("http://127.0.0.1:9", 2)  # nothing listens on the discard port
    with pytest.raises(Unreachable), mlflow_errors(2):
        MlflowClient("http://127.0.0.1:9").search_experiments()


def _bind(address: str):
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", address)
    yield
    st_config.set_option("server.address", old)


@pytest.fixture()
def loopback():
    """The console as `make console` runs it, on 127.0.0.1: the OS user may write."""
    yield from _bind("127.0.0.1")


@pytest.fixture()
def everywhere():
    """The console on every interface without a login: its visitors are anonymous."""
    yield from _bind("0.0.0.0")


def _app(monkeypatch, uri: str) -> AppTest:
    monkeypatch.delenv("RAYLANE_CONSOLE_AUTH", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("RAYLANE_MODEL", "credit")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    at = AppTest.from_file(PAGE, default_timeout=30)
    at.run()
    assert not at.exception, at.exception
    return at


def test_an_anonymous_visitor_cannot_promote(store, monkeypatch, everywhere):
    uri, client, v = store
    at = _app(monkeypatch, uri)
    assert any("Sign in to promote" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not [t for t in at.text_input if t.key == "models_who"]  # no free-text name
    assert at.selectbox(key="models_target").disabled
    assert next(b for b in at.button if b.label == "Move champion").disabled
    assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == v["v2"]


def test_a_promotion_records_the_signed_in_user(store, monkeypatch, loopback):
    uri, client, v = store
    at = _app(monkeypatch, uri)
    at.selectbox(key="models_target").set_value(v["v1"])
    at.text_area(key="models_why").input("v2 misprices")
    at.checkbox(key="models_confirm").check()
    next(b for b in at.button if b.label == "Move champion").click().run()
    champion = client.get_model_version_by_alias("credit", CHAMPION)
    assert str(champion.version) == v["v1"]
    assert champion.tags[reg.PROMOTED_BY].endswith("@localhost")


def test_page_shows_versions_and_refuses_a_failed_version(store, monkeypatch, loopback):
    uri, client, v = store
    at = _app(monkeypatch, uri)
    assert at.metric[0].value == f"v{v['v2']}"  # champion
    assert "v3" in at.selectbox(key="models_target").options[0]
    at.selectbox(key="models_target").set_value(v["bad"])
    at.text_area(key="models_why").input("let's see")
    at.checkbox(key="models_confirm").check()
    at.button[-1].click().run()
    assert any("failed its gates" in e.value for e in at.error), [e.value for e in at.error]
    assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == v["v2"]


def test_page_says_mlflow_is_down(tmp_path, monkeypatch):
    at = _app(monkeypatch, "http://127.0.0.1:9")
    assert "MLflow is not reachable" in at.error[0].value


def test_grants_decide_write_access_without_writing():
    """The basic-auth app's users/current/permissions answer, read (the server test uses a real
    one: tests/test_console_write_access.py)."""
    row = {"resource_type": "registered_model", "resource_pattern": "*", "permission": "EDIT"}
    assert reg.model_permission({"permissions": [row]}, "credit")[0]
    assert not reg.model_permission({"permissions": [{**row, "permission": "READ"}]}, "credit")[0]
    assert not reg.model_permission({"permissions": [{**row, "resource_pattern": "other"}]},
                                    "credit")[0]
    assert not reg.model_permission({"permissions": [row, {**row, "resource_pattern": "credit",
                                                           "permission": "DENY"}]}, "credit")[0]
    assert reg.model_permission({"is_admin": True, "permissions": []}, "credit")[0]
