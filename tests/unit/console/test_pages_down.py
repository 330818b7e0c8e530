"""The Predict, Score a file and Service pages with nothing to talk to: each says which service is
down and what to do, without a traceback (Streamlit's AppTest; no server started)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from support.net import closed_port_url
from support.paths import ROOT

PAGES = ROOT / "console" / "pages"


@pytest.fixture
def nothing_running(monkeypatch):
    monkeypatch.setenv("RAYLANE_SERVE_URL", closed_port_url())
    monkeypatch.setenv("RAY_ADDRESS", closed_port_url())
    monkeypatch.delenv("RAYLANE_SERVE_DASHBOARD", raising=False)
    monkeypatch.delenv("RAYLANE_METRICS_URL", raising=False)
    monkeypatch.setenv("RAYLANE_CONSOLE_TIMEOUT_S", "2")


@pytest.mark.parametrize("name", ["predict", "score_file", "service"])
def test_page_says_the_model_service_is_down(nothing_running, name):
    at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = " ".join(e.value for e in at.error)
    assert "The model service is not reachable" in errors
    assert "connection refused" in errors and "make serve" in errors
    if name == "service":  # it names Ray's dashboard too, and still shows the Serve config
        assert "Ray's dashboard is not reachable" in errors
        assert at.dataframe and at.dataframe[0].value.loc[0, "max_replicas"] == 4
