"""Who may write from the console: an OIDC login, an auth proxy's header, or the OS user of a
console bound to loopback; anyone else is anonymous and may not promote or submit (AppTest)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from raylane.console import identity

ROOT = Path(__file__).resolve().parents[3]
TRAINING = str(ROOT / "console" / "pages" / "training.py")
APP = str(ROOT / "console" / "app.py")


@pytest.fixture()
def bound(monkeypatch):
    """Set Streamlit's server.address for the test (AppTest runs the page in this process)."""
    old = st_config.get_option("server.address")

    def bind(address: str | None) -> None:
        st_config.set_option("server.address", address)

    yield bind
    st_config.set_option("server.address", old)


def test_the_mode_is_explicit_or_follows_the_secrets():
    assert identity.mode({"RAYLANE_CONSOLE_AUTH": "proxy"}, True) == "proxy"
    assert identity.mode({}, has_auth_secrets=True) == "oidc"
    assert identity.mode({}, has_auth_secrets=False) == "local"
    with pytest.raises(ValueError, match="RAYLANE_CONSOLE_AUTH: expected one of"):
        identity.mode({"RAYLANE_CONSOLE_AUTH": "none"})


def test_the_os_user_only_on_loopback():
    assert identity.local("127.0.0.1").name.endswith("@localhost")
    assert identity.local("::1").name
    for address in (None, "0.0.0.0", "10.0.0.5"):
        who = identity.local(address)
        assert who.anonymous and "RAYLANE_CONSOLE_AUTH" in who.reason


def test_the_proxy_header_is_trusted_only_from_the_sidecar():
    headers = {"x-forwarded-email": "ana@example.com"}
    assert identity.from_proxy(headers, "127.0.0.1", "127.0.0.1").name == "ana@example.com"
    assert identity.from_proxy(headers, None, "127.0.0.1").name == "ana@example.com"
    assert identity.from_proxy(headers, "10.1.2.3", "127.0.0.1").anonymous  # not the proxy
    assert identity.from_proxy(headers, "127.0.0.1", "0.0.0.0").anonymous  # reachable directly
    assert identity.from_proxy({}, "127.0.0.1", "127.0.0.1").anonymous
    assert identity.from_proxy({"X-User": "bo"}, None, "127.0.0.1", "X-User").name == "bo"


def test_an_anonymous_visitor_cannot_submit_a_job(monkeypatch, bound, tmp_path):
    monkeypatch.delenv("RAYLANE_CONSOLE_AUTH", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    bound("0.0.0.0")  # every interface, no login
    at = AppTest.from_file(TRAINING, default_timeout=60).run()
    assert not at.exception, at.exception
    submit = next(b for b in at.button if b.label == "Submit to Ray")
    assert submit.disabled
    assert any("Sign in to submit training jobs" in w.value for w in at.warning)


def test_an_oidc_console_asks_for_a_login(monkeypatch, bound, tmp_path):
    monkeypatch.delenv("RAYLANE_CONSOLE_AUTH", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    bound("0.0.0.0")
    at = AppTest.from_file(TRAINING, default_timeout=60)
    at.secrets["auth"] = {"redirect_uri": "https://console.example.com/oauth2callback",
                          "cookie_secret": "x" * 32, "client_id": "raylane",
                          "client_secret": "s", "server_metadata_url":
                          "https://idp.example.com/.well-known/openid-configuration"}
    at.run()
    assert not at.exception, at.exception
    assert next(b for b in at.button if b.label == "Submit to Ray").disabled
    assert any("not logged in" in w.value.lower() for w in at.warning), at.warning


def test_a_loopback_console_submits_as_the_os_user(monkeypatch, bound, tmp_path):
    monkeypatch.setenv("RAYLANE_CONSOLE_AUTH", "local")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none.db'}")
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:9")
    bound("127.0.0.1")
    at = AppTest.from_file(TRAINING, default_timeout=60).run()
    assert not next(b for b in at.button if b.label == "Submit to Ray").disabled
    at.text_area(key="training_overrides").input("tune.num_samples=2")
    next(b for b in at.button if b.label == "Submit to Ray").click().run()
    # It got as far as Ray (which is down here): the visitor was allowed to submit.
    assert any("Ray's dashboard is not reachable" in e.value for e in at.error)
