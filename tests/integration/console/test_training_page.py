"""The console's Training page (Streamlit AppTest) against a real `ray start --head` and a real
`mlflow server`: a bad override is shown and nothing is submitted; a good one is submitted through
Ray's Job Submission SDK, the page follows the job to its end, and the tuning run it logged shows
with its search-progress plot."""

from __future__ import annotations

import os
import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest
from support.environ import restored_environ
from support.paths import CREDIT_CSV, ROOT

from raylane.console import jobs

pytestmark = pytest.mark.slow
PAGE = str(ROOT / "console" / "pages" / "training.py")
CONFIG = ROOT / "tune_configs" / "credit_xgboost.yaml"


def submit(at: AppTest, overrides: str) -> AppTest:
    at.selectbox(key="training_config").set_value(CONFIG)
    at.text_area(key="training_overrides").input(overrides)
    next(b for b in at.button if b.label == "Submit to Ray").click().run()
    assert not at.exception, at.exception
    return at


def test_submit_a_training_job_and_follow_it(fresh_ray_head, mlflow_server, tmp_path):
    ray_head = fresh_ray_head
    with restored_environ():
        os.environ.update(MLFLOW_TRACKING_URI=mlflow_server, RAY_ADDRESS=ray_head)
        at = AppTest.from_file(PAGE, default_timeout=60).run()
        assert not at.exception, at.exception
        assert "No raylane jobs on this cluster yet." in [i.value for i in at.info]

        submit(at, "tune.num_samples=two")
        assert any("nothing was submitted" in e.value for e in at.error)
        assert "tune.num_samples" in at.code[0].value
        assert jobs.recent_jobs(ray_head).empty

        submit(at, "\n".join([
            f"data.path={CREDIT_CSV}", "tune.num_samples=2", "tune.max_concurrent_trials=1",
            "tune.search_alg=random", "tune.scheduler.type=fifo",
            "model.params.n_estimators=30", "model.search_space.n_estimators=30",
            "mlflow.experiment=console-training", "mlflow.registered_model=console-training",
            f"tune.storage_path={tmp_path / 'ray_results'}"]))
        job_id = at.session_state["training_job"]
        assert any(job_id in s.value for s in at.success), [e.value for e in at.error]
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
