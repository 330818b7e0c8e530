"""End to end: a real Prometheus (`make observe`'s, raylane.observability.local) scraping a real
Ray Serve app through the service discovery file Ray writes, with the shipped alert rules. A
fault is injected (a version that cannot load is promoted), RaylaneModelLoadGaveUp goes firing
in /api/v1/alerts within its `for:` + 2 scrape intervals of the metric being exported, and
resolves after the fix (`champion` moved back). The measured latencies are printed.

The console's Metrics view is tested on the same stack (one Ray, one Prometheus per module): after
real requests, the page (Streamlit AppTest) charts the request rate and latency Prometheus
computed with the alert rules' own expressions."""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import yaml
from streamlit.testing.v1 import AppTest
from support import serving as ss
from support.console import browser_page, require_chromium, settled, streamlit_app
from support.environ import restored_environ
from support.observability import INTERVAL_S, ROOT, served_and_scraped, wait_for

from raylane.console import metrics
from raylane.observability import manifests

pytestmark = [pytest.mark.slow, pytest.mark.serial]

ALERT = "RaylaneModelLoadGaveUp"
PAGE = str(ROOT / "console" / "pages" / "metrics.py")
SCREENSHOTS = ROOT / "docs" / "console"
GAVE_UP = re.compile(r'^ray_raylane_model_load_gave_up\{[^}]*model_name="credit"[^}]*\} (\S+)$',
                     re.M)


def alert_for_s(name: str) -> float:
    rules = yaml.safe_load((ROOT / manifests.ALERTS).read_text())
    rule = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == name)
    value = str(rule.get("for", "0s"))
    return float(value[:-1]) * {"s": 1, "m": 60, "h": 3600}[value[-1]]


def exported_gave_up(targets: list[str]) -> float | None:
    """The gauge as Ray's metrics agents export it right now (None: not exported)."""
    values = []
    for target in targets:
        try:
            text = httpx.get(f"http://{target}/metrics", timeout=5).text
        except httpx.HTTPError:
            continue
        values += [float(v) for v in GAVE_UP.findall(text)]
    return max(values) if values else None


def alert_state(prom: str, name: str) -> str | None:
    alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    states = [a["state"] for a in alerts if a["labels"].get("alertname") == name]
    return "firing" if "firing" in states else (states[0] if states else None)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with served_and_scraped(tmp_path_factory.mktemp("observed")) as stack:
        yield stack


def records(frame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]


def latest(prom: str, key: str) -> dict[str, float]:
    """The newest values of one of the Metrics view's charts, as the page reads them."""
    return metrics.latest(recent(prom, key))


# First in the module: the replica exports its load gauge when it loads, and the metrics
# tests' minutes of traffic later, Prometheus no longer had the series (seen: 90 s wait).
def test_a_model_that_cannot_load_fires_its_alert_and_resolves(stack):
    prom = stack["prom"]
    targets = [t for entry in yaml.safe_load(stack["sd"].read_text()) for t in entry["targets"]]
    # Prometheus scrapes Ray's targets and has the replica's gauge at 0 (the model is served)
    wait_for("Ray targets up in Prometheus", lambda: [
        t for t in httpx.get(f"{prom}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        if t["health"] == "up"], 60)
    query = f"{prom}/api/v1/query"
    wait_for("the gauge in Prometheus", lambda: httpx.get(query, params={
        "query": "ray_raylane_model_load_gave_up"}, timeout=5).json()["data"]["result"], 90)
    assert alert_state(prom, ALERT) is None

    # the fault: a version that cannot load is promoted
    t_fault = time.monotonic()
    bad = ss.register_broken(stack["uri"], "credit", stack["trained"].schema,
                             stack["trained"].X, "corrupt_onnx")
    wait_for("the gauge exported at 1", lambda: exported_gave_up(targets) == 1.0, 120, 0.1)
    t_exported = time.monotonic()
    wait_for(f"{ALERT} firing", lambda: alert_state(prom, ALERT) == "firing", 120, 0.1)
    t_firing = time.monotonic()
    meta = httpx.get(f"{stack['serve']}/metadata", timeout=10).json()
    assert meta["version"] == stack["v1"] and meta["load_status"]["pending_version"] == bad

    # the fix: champion back on the served version
    ss.move_alias(stack["uri"], "credit", stack["v1"])
    t_fix = time.monotonic()
    wait_for("the gauge exported at 0", lambda: exported_gave_up(targets) == 0.0, 120, 0.1)
    t_exported_fix = time.monotonic()
    wait_for(f"{ALERT} resolved", lambda: alert_state(prom, ALERT) is None, 120, 0.1)
    t_resolved = time.monotonic()

    budget = alert_for_s(ALERT) + 2 * INTERVAL_S
    print(f"\n{ALERT}: fault -> exported {t_exported - t_fault:.1f} s, exported -> firing "
          f"{t_firing - t_exported:.1f} s (for + 2 scrape intervals = {budget:.0f} s); fix -> "
          f"exported {t_exported_fix - t_fix:.1f} s, exported -> resolved "
          f"{t_resolved - t_exported_fix:.1f} s")
    # the export itself is Ray's metrics agent (its report interval); Prometheus's part is
    # bounded by the rule's for: and two intervals (scrape, then evaluation), plus polling slack
    assert t_firing - t_exported <= budget + 1.0
    assert t_resolved - t_exported_fix <= budget + 1.0


@pytest.fixture(scope="module")
def traffic(stack) -> Iterator[str]:
    """Real requests served and scraped: Prometheus has a request rate and a p99 latency, and
    keeps getting new ones while the module's tests read the Metrics view (as a dashboard is read
    while the service is used: with the traffic over, the rate falls to 0 and the p99 is gone
    within the rules' window, whenever the page happens to be opened). Prometheus's URL."""
    prom = stack["prom"]
    body = {"records": records(stack["trained"].X.head(20))}
    with httpx.Client(base_url=stack["serve"], timeout=30) as client:
        def burst() -> None:
            for _ in range(10):
                response = client.post("/predict", json=body)
                assert response.status_code == 200, response.text
            response = client.post("/predict", json={"records": [{"no such column": 1}]})
            assert 400 <= response.status_code < 500, response.text

        # A counter's first sample is no increase: traffic before and after Prometheus first
        # sees it, so rate() has something to measure.
        burst()
        wait_for("the predictions counter in Prometheus", lambda: httpx.get(
            f"{prom}/api/v1/query", params={"query": metrics.promql.PREDICTIONS},
            timeout=5).json()["data"]["result"], 120, 0.5)
        burst()
    done = threading.Event()
    answers: list[int | str] = []

    def steady() -> None:
        with httpx.Client(base_url=stack["serve"], timeout=30) as client:
            while not done.wait(0.25):
                try:
                    answers.append(client.post("/predict", json=body).status_code)
                except httpx.HTTPError as exc:
                    answers.append(type(exc).__name__)

    sender = threading.Thread(target=steady, daemon=True)
    sender.start()
    try:
        wait_for("a request rate above 0", lambda: latest(prom, "requests").get("requests/s"),
                 120, 1)
        wait_for("a p99 latency", lambda: latest(prom, "latency").get("p99"), 60, 1)
        yield prom
    finally:
        done.set()
        sender.join(60)
    assert 200 in answers, sorted(set(map(str, answers)))  # the traffic was served


def test_the_console_metrics_view_charts_the_served_traffic(traffic):
    prom = traffic
    with restored_environ():
        os.environ.update(RAYLANE_PROMETHEUS_URL=prom, RAYLANE_CONSOLE_TIMEOUT_S="10")
        at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]
    tiles = {m.label: m.value for m in at.metric}
    assert float(tiles["Requests/s"]) > 0
    assert tiles["Latency p50"].endswith(" ms") and tiles["Latency p99"].endswith(" ms")
    assert float(tiles["Healthy replicas"]) == 1
    empty = " ".join(i.value for i in at.info)
    for title in ("Request rate", "Latency", "Errors by reason", "Healthy replicas",
                  "Model version served", "Node CPU", "Node memory"):
        assert f"**{title}**" not in empty, empty  # charted, not "no data"
    assert len(at.get("vega_lite_chart")) >= 7

    # a query Prometheus refuses is its own error, not "unreachable"
    with pytest.raises(metrics.QueryFailed, match="bad_data"):
        metrics.query_range(prom, "sum(", datetime.now(UTC) - timedelta(minutes=1),
                            datetime.now(UTC), 5, 10)


def test_the_metrics_view_in_a_real_browser(traffic, tmp_path):
    """The whole console (``streamlit run``) in headless Chromium on the same stack: the Metrics
    page draws the request-rate and latency lines from Prometheus; its screenshot is kept with
    the other pages' in docs/console."""
    require_chromium()
    # a line needs two points: until the page's default window (1 hour, 15 s steps) has them
    for key in ("requests", "latency"):
        wait_for(f"two {key} points",
                 lambda k=key: len(recent(traffic, k, 60).dropna(how="all")) > 1, 90, 1)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    env = {"RAYLANE_PROMETHEUS_URL": traffic, "RAYLANE_CONSOLE_TIMEOUT_S": "10"}
    with streamlit_app(env, tmp_path / "streamlit.log") as url, \
            browser_page(tmp_path) as browser:
        # a session's first page is the app (its navigation), as a user arrives
        browser.goto(url)
        browser.locator("h1").first.wait_for()
        settled(browser)
        browser.get_by_test_id("stSidebarNav").get_by_text("Metrics", exact=True).click()
        browser.wait_for_url(f"{url}/metrics")
        heading = browser.locator("h1").filter(has_text="Metrics")
        heading.wait_for()
        # the tiles come after the page's queries: "not running" can be seen before they are drawn
        wait_for_tile(browser, "Requests/s")
        settled(browser)
        assert browser.locator("[data-testid='stException']").count() == 0
        alerts = browser.locator("[data-testid='stAlert']").all_inner_texts()
        assert not [a for a in alerts if "Request rate" in a or "Latency" in a
                    or "Prometheus" in a], alerts
        tiles = {t.locator("[data-testid='stMetricLabel']").inner_text().strip():
                 t.locator("[data-testid='stMetricValue']").inner_text().strip()
                 for t in browser.get_by_test_id("stMetric").all()}
        assert float(tiles["Requests/s"].replace(",", "")) > 0, tiles
        assert tiles["Latency p99"].endswith(" ms"), tiles
        for title in ("Request rate", "Latency"):
            # Vega draws after the script run ends: until its marks are on the page
            chart_under(browser, title).locator("canvas, svg.marks").first.wait_for(
                timeout=60_000)
        # Streamlit scrolls inside a viewport-high pane: grow the viewport to take every chart
        height = browser.get_by_test_id("stMainBlockContainer").evaluate("e => e.scrollHeight")
        browser.set_viewport_size({"width": 1400, "height": max(1000, int(height) + 100)})
        settled(browser)
        browser.screenshot(path=SCREENSHOTS / "metrics.png", full_page=True)


def wait_for_tile(browser, label: str, timeout_ms: int = 60_000) -> None:
    """Until the metric tile ``label`` is drawn; failing, say what the page showed instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    tile = browser.get_by_test_id("stMetric").filter(
        has=browser.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    try:
        tile.wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        shown = browser.get_by_test_id("stMain").inner_text()[-2000:]
        pytest.fail(f"no {label!r} tile within {timeout_ms / 1000:g} s; the page showed: {shown}")


def recent(prom: str, key: str, minutes: int = 15):
    """One of the Metrics view's charts over its last ``minutes``, as the page queries it."""
    chart = next(c for c in metrics.charts() if c.key == key)
    end = datetime.now(UTC)
    return metrics.chart_frame(prom, chart, end - timedelta(minutes=minutes), end, 10)


def chart_under(browser, title: str):
    """The chart drawn right after the subheader ``title`` (and its caption), not a later one."""
    container = browser.locator("[data-testid='stElementContainer']").filter(
        has=browser.get_by_role("heading", name=title, exact=True))
    return container.locator(
        "xpath=following-sibling::div[.//*[@data-testid='stVegaLiteChart'] or "
        ".//*[@data-testid='stAlert'] or .//h3][1]").locator(
        "[data-testid='stVegaLiteChart']")
