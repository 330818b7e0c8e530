"""The console's Predict, Score a file and Service pages against a real Ray Serve serving a real
model (Streamlit's AppTest), the same with every service down, and the whole console in a real
browser (headless Debian Chromium through Playwright, ``streamlit run`` as a process).

One stack (MLflow store, Ray with its dashboard, Serve) for the module.
"""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest
from support.console import (
    browser_page,
    console_stack,
    require_chromium,
    settled,
    streamlit_app,
    wait_metrics,
    wait_serve_api,
)
from support.serving import CREDIT_CSV, ROOT

pytestmark = pytest.mark.slow

PAGES = ROOT / "console" / "pages"
SCREENSHOTS = ROOT / "docs" / "console"
TIMEOUT = 60  # AppTest's per-run limit: a busy 2-core machine


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with console_stack(tmp_path_factory.mktemp("console")) as s:
        yield s


@pytest.fixture
def console_env(stack, monkeypatch):
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    return stack


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=TIMEOUT)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def credit_rows(n: int) -> pd.DataFrame:
    return pd.read_csv(CREDIT_CSV).head(n)


# ---------------------------------------------------------------- AppTest against real services


def test_predict_form_from_metadata_and_answer(console_env):
    at = page("predict").run()
    no_exception(at)
    # categorical columns are select boxes with the training categories, read from the
    # version's reference profile (the service itself does not list them: metadata_categories 0)
    home = next(s for s in at.selectbox if s.label.startswith("Home"))
    assert {"owner", "rent", "parents"} <= set(home.options)
    assert home.options[0] == "(missing)"  # Home is nullable
    records = next(s for s in at.selectbox if s.label.startswith("Records"))
    assert "(missing)" not in records.options  # trained without missing values
    # numeric inputs carry the training range from the version's reference profile
    assert any("training range" in c.value for c in at.caption)
    home.set_value("owner")
    next(n for n in at.number_input if n.label.startswith("Income")).set_value(150.0)
    at.button[0].click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Prediction"] in {"good", "bad"}
    assert metrics["Model version"] == console_env.version
    ids = [m.value for m in at.markdown if m.value.startswith("Prediction id")]
    assert ids and len(ids[0].split("`")[1]) == 32
    assert at.get("vega_lite_chart"), "no probability chart"


def test_predict_shows_the_service_rejection_at_its_field(console_env):
    at = page("predict").run()
    # float32 cannot hold it: the service answers 400 naming Income
    next(n for n in at.number_input if n.label.startswith("Income")).set_value(1e39)
    at.button[0].click().run()
    no_exception(at)
    assert at.session_state["predict_errors"].keys() == {"Income"}
    errors = [e.value for e in at.error]
    assert any("'Income'" in e and "finite" in e for e in errors), errors
    assert not [m for m in at.metric if m.label == "Prediction"]


def test_score_file_batches_and_lists_rejected_rows(console_env):
    frame = credit_rows(120)
    frame["Income"] = frame["Income"].astype(object)
    bad = [5, 77, 78]
    for row in bad:
        frame.loc[row, "Income"] = "lots"  # the service rejects a string in a numeric column
    at = page("score_file").run()
    no_exception(at)
    buffer = io.BytesIO()
    frame.to_csv(buffer, index=False)
    at.file_uploader[0].upload("applicants.csv", buffer.getvalue(), "text/csv").run()
    at.select_slider[0].set_value(64).run()
    at.button[0].click().run()
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows scored"] == "117" and metrics["Rows rejected"] == "3"
    result = at.session_state["scored"]
    assert result.rejected["row"].tolist() == bad
    assert set(result.rejected["reason"]) == {"wrong_type"}
    assert set(result.rejected["field"]) == {"Income"}
    assert bad[0] not in result.frame.index and len(result.frame) == 117
    assert result.frame["prediction"].isin(["good", "bad"]).all()
    assert result.frame["prediction_id"].str.len().eq(32).all()
    # batches of 64: two requests, plus a few per bad row, far fewer than one per row
    assert 2 < result.requests < 20
    assert at.download_button, "no download button"


def test_service_page_replicas_traffic_and_rejections(console_env):
    wait_serve_api(console_env.dashboard)
    for _ in range(5):
        httpx.post(f"{console_env.serve_url}/predict",
                   json={"records": credit_rows(2).drop(columns="Status").to_dict("records")})
    httpx.post(f"{console_env.serve_url}/predict", json={"records": []})  # 400 empty_batch
    wait_metrics(console_env.metrics_url, "raylane_rejected_requests_total", at_least=1)
    wait_metrics(console_env.metrics_url, "raylane_predictions_total", at_least=5)
    at = page("service").run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Status"] == "healthy"
    assert metrics["Version answering"] == f"credit v{console_env.version}"
    assert float(metrics["Requests answered"].replace(",", "")) >= 5
    assert metrics["p50 latency"].endswith(" ms")
    replicas = at.dataframe[0].value
    assert replicas.loc[0, "deployment"] == "RaylaneModel" and replicas.loc[0, "running"] == 1
    autoscaling = at.dataframe[1].value
    assert autoscaling.loc[0, "max_replicas"] == 3
    assert "No rejected requests" not in " ".join(s.value for s in at.success)


# ---------------------------------------------------------------- a real browser


def test_console_in_a_real_browser(stack, tmp_path):
    require_chromium()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    upload = tmp_path / "applicants.csv"
    credit_rows(40).drop(columns="Status").to_csv(upload, index=False)
    with streamlit_app(stack.env(), tmp_path / "streamlit.log") as url, \
            browser_page(tmp_path) as browser:
        for path, title in (("", "Predict"), ("score_file", "Score a file"),
                            ("models", "Models"), ("monitoring", "Monitoring"),
                            ("service", "Service"), ("training", "Training")):
            browser.goto(f"{url}/{path}")
            heading = browser.locator("h1").first
            heading.wait_for()
            settled(browser)
            assert heading.inner_text().strip().lower() == title.lower(), path
            assert browser.locator("[data-testid='stException']").count() == 0, path
            if path == "monitoring":  # the stack's two reports, drawn
                browser.get_by_text("Latest decision").wait_for()
                # Vega draws after the script run ends: wait for the second chart to mount
                charts = browser.locator("[data-testid='stVegaLiteChart']")
                charts.nth(1).wait_for(timeout=60_000)
                assert charts.count() >= 2
            if path not in ("", "score_file"):
                browser.screenshot(path=SCREENSHOTS / f"{path or 'predict'}.png", full_page=True)

        # Predict: fill in the form, submit, read the answer
        browser.goto(url)
        browser.get_by_role("button", name="Predict").wait_for()
        income = browser.get_by_label("Income", exact=True)
        income.fill("180")
        income.press("Tab")
        browser.get_by_role("button", name="Predict").click()
        answer = browser.get_by_test_id("stMetric").filter(has_text="Prediction")
        answer.wait_for()
        settled(browser)
        assert answer.locator("[data-testid='stMetricValue']").inner_text() in {"good", "bad"}
        version = browser.get_by_test_id("stMetric").filter(has_text="Model version")
        assert version.locator("[data-testid='stMetricValue']").inner_text() == stack.version
        assert browser.get_by_text("Prediction id").count() == 1
        browser.screenshot(path=SCREENSHOTS / "predict.png", full_page=True)

        # Score a file: upload, score, download
        browser.goto(f"{url}/score_file")
        browser.locator("input[type='file']").set_input_files(str(upload))
        browser.get_by_role("button", name="Score").click()
        download_button = browser.get_by_role("button", name="Download applicants_scored.csv")
        download_button.wait_for(timeout=60_000)
        settled(browser)
        with browser.expect_download() as info:
            download_button.click()
        scored = pd.read_csv(info.value.path())
        settled(browser)
        browser.screenshot(path=SCREENSHOTS / "score_file.png", full_page=True)
    assert len(scored) == 40
    assert scored["prediction"].isin(["good", "bad"]).all()
    assert scored["prediction_id"].str.len().eq(32).all()
    assert set(scored["model_version"].astype(str)) == {stack.version}
    assert {p.stem for p in Path(SCREENSHOTS).glob("*.png")} >= {
        "predict", "score_file", "models", "monitoring", "service", "training"}
