"""The console's Training page (Streamlit AppTest) against a real `ray start --head` and a real
`mlflow server`: a bad override is shown and nothing is submitted; a good one is submitted through
Ray's Job Submission SDK, the page follows the job to its end, and the tuning run it logged shows
with its search-progress plot."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import streamlit as st
import yaml
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest
from support.environ import restored_environ
from support.paths import ROOT

from raylane.console import jobs

pytestmark = pytest.mark.slow
PAGE = str(ROOT / "console" / "pages" / "training.py")
CONFIG = ROOT / "tune_configs" / "credit_xgboost.yaml"


@contextmanager
def loopback() -> Iterator[None]:
    """Streamlit's server.address 127.0.0.1, as `make console` runs: the OS user submits."""
    address = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")
    try:
        yield
    finally:
        st_config.set_option("server.address", address)


def quick_configs(folder: Path, storage: Path) -> Path:
    """A tune_configs folder with one quick config: data, MLflow names and storage are the
    config's (the page sets only the search)."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["data"]["path"] = "data/credit_data.csv"
    raw["model"]["params"]["n_estimators"] = 30
    raw["model"]["search_space"]["n_estimators"] = 30
    raw["tune"].update(max_concurrent_trials=1, storage_path=str(storage))
    raw["mlflow"].update(experiment="console-training", registered_model="console-training")
    folder.mkdir()
    (folder / "quick.yaml").write_text(yaml.safe_dump(raw))
    return folder / "quick.yaml"


def submit(at: AppTest, config: Path, overrides: str) -> AppTest:
    at.selectbox(key="training_config").set_value(config)
    at.text_area(key="training_overrides").input(overrides)
    next(b for b in at.button if b.label == "Submit to Ray").click().run()
    assert not at.exception, at.exception
    return at


def test_submit_a_training_job_and_follow_it(fresh_ray_head, mlflow_server, tmp_path):
    ray_head = fresh_ray_head
    config = quick_configs(tmp_path / "tune_configs", tmp_path / "ray_results")
    with restored_environ(), loopback():
        os.environ.update(MLFLOW_TRACKING_URI=mlflow_server, RAY_ADDRESS=ray_head,
                          RAYLANE_TUNE_CONFIGS=str(config.parent), RAYLANE_CONSOLE_AUTH="local")
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        assert not at.exception, at.exception
        assert "No raylane jobs on this cluster yet." in [i.value for i in at.info]

        submit(at, config, "tune.num_samples=two")
        assert any("nothing was submitted" in e.value for e in at.error)
        assert "tune.num_samples" in at.code[0].value
        submit(at, config, "tune.num_samples=2\nmlflow.tracking_uri=http://attacker.example/")
        assert "mlflow.tracking_uri: not settable from the console" in at.code[0].value
        assert jobs.recent_jobs(ray_head).empty

        submit(at, config, "\n".join([
            "tune.num_samples=2", "tune.search_alg=random", "tune.scheduler.type=fifo",
            "tune.time_budget_s=300"]))
        job_id = at.session_state["training_job"]
        assert any(job_id in s.value for s in at.success), [e.value for e in at.error]
        info = jobs.jobs_client(ray_head).get_job_info(job_id)
        assert info.metadata["raylane.deadline_s"] == str(300 + int(jobs.Limits().margin_s))
        assert info.entrypoint.startswith("timeout --kill-after=60 2100 python -m ray_jobs.")
        assert info.metadata["raylane.by"].endswith("@localhost")
        deadline = time.monotonic() + 400
        while not (state := jobs.job_state(ray_head, job_id)).finished:
            assert time.monotonic() < deadline, state.log[-3000:]
            time.sleep(2)
        assert state.status == "SUCCEEDED", state.log[-3000:]

        st.cache_data.clear()  # the page caches the tuning runs for 30 s
        at.run()
        assert not at.exception, at.exception
        assert any(f"**{job_id}** :green-badge[succeeded]" in m.value for m in at.markdown)
        assert "Raylane training summary" in at.code[-1].value
        assert at.dataframe[0].value["run"].notna().all()  # the job's parent run
        assert len(at.get("image")) == 1  # its search progress
