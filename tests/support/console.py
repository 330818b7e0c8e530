"""The console's test stack and its processes: a real model in a real registry, served by a real
Ray Serve on a Ray cluster with its dashboard (Serve REST API) and metrics agent; the console
as ``streamlit run`` subprocess; Debian's Chromium driven by Playwright.

One stack per test module (``console_stack``): Ray with its dashboard takes ~20 s to start here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from raylane.config import GatesConfig
from raylane.monitoring.reference import reference_sample
from raylane.release.gates import check_gates, evaluate
from raylane.release.publish import publish
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client, parent_run
from support.environ import restored_environ
from support.monitoring import monitoring_history
from support.processes import stop_group
from support.serving import (
    ROOT,
    Trained,
    free_port,
    settings,
    tracking_uri_for,
    train,
    wait_running,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
MODEL = "credit"
APP = "raylane"


@dataclass
class ConsoleStack:
    serve_url: str
    tracking_uri: str
    dashboard: str
    metrics_url: str
    version: str
    serve_config: Path

    def env(self) -> dict[str, str]:
        """The console's environment for this stack."""
        return {"RAYLANE_SERVE_URL": self.serve_url, "MLFLOW_TRACKING_URI": self.tracking_uri,
                "RAY_ADDRESS": self.dashboard, "RAYLANE_MODEL": MODEL,
                "RAYLANE_METRICS_URL": self.metrics_url,
                "RAYLANE_SERVE_CONFIG": str(self.serve_config),
                "RAYLANE_CONSOLE_TIMEOUT_S": "10"}


def publish_credit(tracking_uri: str) -> tuple[str, Trained, bytes]:
    """Train and publish the credit model as the training job does, with its monitoring
    reference profile (the Predict form's training ranges come from it). Its version, the
    trained model and its ONNX graph."""
    trained = train("credit", n_estimators=20)
    client = mlflow_client(tracking_uri)
    experiment_id = open_experiment(client, "console-tests")
    evaluation = evaluate(trained.pipeline, trained.data, trained.metric, 0.25)
    with parent_run(client, experiment_id, run_name="console") as run_id:
        published = publish(
            trained.pipeline, trained.schema, trained.data.holdout, metric=trained.metric,
            gates=check_gates(evaluation, GatesConfig()), client=client, registered_model=MODEL,
            run_id=run_id, reference=reference_sample(trained.data.train, 300, 0),
        )
    return str(published.version.version), trained, published.onnx_bytes


@contextmanager
def console_stack(tmp: Path, metadata_categories: int = 0) -> Iterator[ConsoleStack]:
    """MLflow (SQLite) with the credit model as champion, served by Ray Serve on a fresh local
    Ray with its dashboard; everything stopped on exit."""
    import ray
    from ray import serve

    from raylane.serving.app import ModelServer

    tracking_uri = tracking_uri_for(tmp)
    version, trained, onnx_bytes = publish_credit(tracking_uri)
    serve_config = tmp / "serve.yaml"
    serve_config.write_text(
        "applications:\n- name: raylane\n  import_path: raylane.serving.app:app\n"
        "  deployments:\n  - name: RaylaneModel\n    autoscaling_config: {min_replicas: 1, "
        "max_replicas: 3, initial_replicas: 1, target_ongoing_requests: 8}\n")
    with restored_environ():
        for var in ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_ADDRESS"):
            os.environ.pop(var, None)
        os.environ.setdefault("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", "30")
        os.environ.setdefault("RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S", "30")
        port, dashboard_port, metrics_port = free_port(), free_port(), free_port()
        ray.init(num_cpus=4, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=dashboard_port, _metrics_export_port=metrics_port,
                 address="local", runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            user_config = settings(tracking_uri, f"models:/{MODEL}@champion",
                                   metadata_categories=metadata_categories)
            serve.run(ModelServer.options(user_config=user_config, num_replicas=1,
                                          ray_actor_options={"num_cpus": 0.5}).bind(),
                      name=APP, route_prefix="/", blocking=False)
            wait_running(APP)
            # Two monitoring reports (clean with labels, then Amount shifted) for the
            # Monitoring page.
            (tmp / "monitoring").mkdir()
            monitoring_history(tmp / "monitoring", tracking_uri, MODEL, "console-tests",
                               trained, onnx_bytes)
            yield ConsoleStack(f"http://127.0.0.1:{port}", tracking_uri,
                               f"http://127.0.0.1:{dashboard_port}",
                               f"http://127.0.0.1:{metrics_port}/metrics", version, serve_config)
        finally:
            try:
                serve.shutdown()
            finally:
                serve.context._set_global_client(None)
                ray.shutdown()


def wait_serve_api(dashboard: str, timeout: float = 90) -> None:
    """Until the dashboard's Serve REST API lists the application (it starts after Serve)."""
    from raylane.ray_auth import auth_headers

    deadline = time.monotonic() + timeout
    headers = auth_headers()
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{dashboard}/api/serve/applications/", headers=headers, timeout=5)
            if r.status_code == 200 and APP in (r.json().get("applications") or {}):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{dashboard}: Serve REST API did not list {APP} in {timeout:.0f}s")


def wait_metrics(metrics_url: str, name: str, timeout: float = 60, at_least: float = 0) -> None:
    """Until the node's metrics agent exports ``name`` with its series summing to ``at_least``
    (Ray reports every few seconds, so one export may hold only part of the traffic sent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            text = httpx.get(metrics_url, timeout=5).text
            values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith((f"{name}{{", f"ray_{name}{{", f"{name} ",
                                          f"ray_{name} "))]
            if values and sum(values) >= at_least:
                return
        except (httpx.HTTPError, ValueError, IndexError):
            pass
        time.sleep(1)
    raise TimeoutError(f"{metrics_url}: no {name} >= {at_least} in {timeout:.0f}s")


# ---------------------------------------------------------------- the console as a process


@contextmanager
def streamlit_app(env: dict[str, str], log: Path) -> Iterator[str]:
    """``streamlit run console/app.py`` on a free port with ``env``; yields its URL. Stopped
    (its whole process group) on exit."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "console" / "app.py"),
           "--server.headless", "true", "--server.port", str(port),
           "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit not healthy in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)


def settled(page, timeout_ms: int = 60_000) -> None:
    """Until Streamlit's script run is over (no skeletons, no stale elements left)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']",
                           timeout=timeout_ms)


def chromium_path() -> str | None:
    """Debian's Chromium, if installed."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")


def require_chromium() -> None:
    """Skip the test without Chromium; fail in CI, where `make test` installs it."""
    import pytest

    if chromium_path() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: `make test` installs it "
                        "(apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")


@contextmanager
def browser_page(downloads: Path) -> Iterator[object]:
    """A Playwright page in headless Debian Chromium (Playwright's own browsers are not used)."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path, "chromium is not installed (apt-get install chromium; `make test` does it)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                          accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


MODELS_PAGE = str(ROOT / "console" / "pages" / "models.py")
# A bound on a hung page, not a speed target: under basic auth every MLflow call checks a
# scrypt hash (~0.1 s of CPU here), and a loaded 2-core machine runs the page's dozens slowly.
PAGE_TIMEOUT_S = 240


@contextmanager
def console_env(url: str, user: tuple[str, str]) -> Iterator[None]:
    """The console's environment for Streamlit's AppTest: this registry, as ``user``; bound to
    127.0.0.1 as `make console` runs it, so the person promoting is the OS user."""
    from streamlit import config as st_config

    address = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    try:
        with restored_environ():
            os.environ.update(MLFLOW_TRACKING_URI=url, RAYLANE_MODEL=MODEL,
                              MLFLOW_TRACKING_USERNAME=user[0], MLFLOW_TRACKING_PASSWORD=user[1],
                              RAYLANE_CONSOLE_AUTH="local")
            yield
    finally:
        st_config.set_option("server.address", address)


def models_page(url: str, user: tuple[str, str]):
    """The Models page run once (AppTest) against ``url`` as ``user``."""
    from streamlit.testing.v1 import AppTest

    with console_env(url, user):
        at = AppTest.from_file(MODELS_PAGE, default_timeout=PAGE_TIMEOUT_S).run()
    assert not at.exception, at.exception
    return at


def click_promote(at, url: str, user: tuple[str, str], version: str, why: str):
    """Choose ``version``, give the reason, confirm and press "Move champion"."""
    at.selectbox(key="models_target").set_value(version)
    at.text_area(key="models_why").input(why)
    at.checkbox(key="models_confirm").check()
    with console_env(url, user):
        next(b for b in at.button if b.label == "Move champion").click().run()
    assert not at.exception, at.exception
    return at
