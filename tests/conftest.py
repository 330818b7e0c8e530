"""Shared fixtures: real MLflow stores (SQLite and a `mlflow server` process) and the session
check that the suite leaves nothing running (support/processes.py). Helpers: tests/support/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from support import processes
from support.environ import restored_environ
from support.mlflow_server import MlflowServer
from support.paths import BIN, ROOT

from raylane.ray_auth import ensure_token

SESSION = processes.mark_session()  # before any test starts a process: children inherit it


def pytest_configure(config) -> None:
    """The suite's clusters all run with token auth, as Ray 2.60's do once a token exists: when
    HOME has none, it is made once here, in the controlling process, before any xdist worker
    starts. Otherwise a `ray start --head` that came before any `ray.init` would start without
    authentication (and its token-mode clients fail), and two workers' first `ray.init` calls
    could each write their own ``~/.ray/auth_token``, one cluster's token replacing the other's."""
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        ensure_token(str(BIN / "ray"), dict(os.environ))


@pytest.fixture(scope="session", autouse=True)
def leaves_nothing_behind():
    """Fail the run if, at its end, a process the suite started is still alive (Ray, HAProxy,
    MLflow/uvicorn servers, ...) or Ray's ``ray_current_cluster`` file names a cluster of ours;
    remove the temporary directories the killed Ray dashboards' forkservers left."""
    before = processes.snapshot(SESSION)
    yield
    found = processes.leftovers(SESSION, before)
    processes.remove_dead_forkserver_dirs(before.started)  # litter of killed Ray dashboards
    if found:
        pytest.fail("the test session left behind:\n  " + "\n  ".join(found), pytrace=False)


@pytest.fixture(autouse=True)
def unit_tests_start_no_ray(request):
    """tests/unit/ is the fast loop: a test there must not leave a Ray instance up."""
    yield
    if request.path.is_relative_to(ROOT / "tests" / "unit"):
        ray = sys.modules.get("ray")
        assert ray is None or not ray.is_initialized(), "a unit test started Ray"


@pytest.fixture()
def sqlite_uri(tmp_path: Path) -> str:
    """An embedded MLflow store in a fresh directory (absolute, so Ray workers find it)."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` over HTTP with proxied artifacts, as a cluster would use; its URL."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> str:
    """One real `ray start --head` for the session's job tests (`ray job submit`, the Jobs SDK);
    its dashboard URL. Tests must not rely on the cluster being empty (``fresh_ray_head``)."""
    from support import jobs  # imports MLflow: not at start-up of every run

    with jobs.ray_head(tmp_path_factory.mktemp("ray-head")) as url:
        yield url


@pytest.fixture()
def fresh_ray_head(tmp_path: Path) -> str:
    """A `ray start --head` of the test's own: a cluster with no jobs yet."""
    from support import jobs

    with jobs.ray_head(tmp_path) as url:
        yield url


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray in this process for the module (2 CPUs, no dashboard), shut down after it,
    with os.environ as it was (``ray.init`` exports variables later clusters would inherit)."""
    import ray

    with restored_environ():
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()
