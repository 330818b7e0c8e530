"""The whole continuous-training loop under traffic, on real parts (local Ray with Serve, MLflow on
SQLite, HTTP): a weak champion serves ``models:/credit@champion`` and logs every prediction;
labels arrive for the rows it answered that it never trained on; CT retrains on the reference data
plus those labelled logged rows; the challenger is judged on rows neither model trained on;
``champion`` moves only because the challenger wins; the service swaps to it while a client keeps
sending requests, and not one of them fails."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pandas as pd
import pyarrow.parquet as pq
import pytest
from support import serving as ss

from raylane.config import load_config
from raylane.continuous import run_continuous_training
from raylane.data.holdout import HoldoutDefinition, holdout_mask
from raylane.tracking.runs import mlflow_client
from raylane.training.job import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.serial]

# Fixed parameters, no search (as tests/integration/continuous/test_loop.py): a weak
# champion, a good challenger, so the fair judgement has one right answer.
GOOD = "{tree_method: hist, n_jobs: 1, n_estimators: 100, max_depth: 3, learning_rate: 0.1}"
WEAK = "{tree_method: hist, n_jobs: 1, n_estimators: 2, max_depth: 1, learning_rate: 0.05}"
REFERENCE_ROWS = 3000  # the champion's data; the rest of credit is the "new" traffic


def records(frame: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict(orient="records")]


def pipeline_config(tmp: Path, uri: str, reference: Path, params: str):
    return load_config(ss.ROOT / "tune_configs" / "credit_xgboost.yaml", [
        f"data.path={reference}", f"mlflow.tracking_uri={uri}",
        f"tune.storage_path={tmp / 'ray_results'}", "tune.num_samples=1",
        "tune.search_alg=random", "tune.scheduler.type=fifo", "model.search_space={}",
        f"model.params={params}", "gates.min_holdout={}", "gates.must_beat_baseline=false"])


class Traffic:
    """One client thread posting one-row /predict requests until stopped; every status code,
    exception and answering version is counted."""

    def __init__(self, url: str, row: dict):
        self.url, self.body = url, {"records": [row]}
        self.statuses: Counter = Counter()
        self.versions: Counter = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, json=self.body)
                    self.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        self.versions[r.json()["model_version"]] += 1
                    else:
                        self.errors.append(f"{r.status_code} {r.text[:200]}")
                except Exception as exc:  # any failure (timeout, reset, bad JSON) counts
                    self.statuses["exception"] += 1
                    self.errors.append(repr(exc))
                self._stop.wait(0.02)  # continuous, but leaves the 2 cores to CT

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=90)
        assert not self._thread.is_alive(), "the traffic thread did not stop"

    def wait_for(self, version: str, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.versions[version] < count and time.monotonic() < deadline:
            if not self._thread.is_alive():
                break
            time.sleep(0.25)
        assert self.versions[version] >= count, (
            f"service did not answer with v{version} within {timeout}s: {self.versions}, "
            f"errors {self.errors[:3]}")


def logged_ids(directory: Path) -> set[str]:
    files = sorted(directory.glob("predictions-*.parquet"))  # complete files only (no .tmp)
    if not files:
        return set()
    return set(pq.read_table(files, columns=["prediction_id"]).column(0).to_pylist())


def wait_logged(directory: Path, ids: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    missing = set(ids)
    while time.monotonic() < deadline:
        missing = set(ids) - logged_ids(directory)
        if not missing:
            return
        time.sleep(0.5)
    raise TimeoutError(f"{len(missing)} of {len(ids)} predictions not logged after {timeout}s")


def test_labels_arrive_ct_retrains_fairly_and_the_service_swaps_without_a_failed_request(
        tmp_path):
    uri = ss.tracking_uri_for(tmp_path)
    frame = pd.read_csv(ss.CREDIT_CSV)
    reference, new = frame.iloc[:REFERENCE_ROWS], frame.iloc[REFERENCE_ROWS:]
    ref_path = tmp_path / "reference.csv"
    reference.to_csv(ref_path, index=False)
    logdir, labels_path = tmp_path / "prediction_log", tmp_path / "labels.csv"
    client = mlflow_client(uri)

    with ss.ray_serve(num_cpus=2) as base:
        # 1. a weak champion, trained by the pipeline on the reference rows only, served
        weak = run_pipeline(pipeline_config(tmp_path, uri, ref_path, WEAK))
        assert weak.decision.promoted and weak.version == "1"
        ss.deploy("loop", ss.settings(
            uri, "models:/credit@champion", poll_interval_s=1.0, prediction_log={
                "enabled": True, "directory": str(logdir), "sample_rate": 1.0,
                "flush_rows": 500, "flush_interval_s": 0.5}),
            route_prefix="/", ray_actor_options={"num_cpus": 0.25})

        # 2. traffic through every step that follows
        traffic = Traffic(f"{base}/predict", records(reference.drop(columns="Status").head(1))[0])
        traffic.start()
        try:
            # 3. the new rows are answered by the champion; their labels arrive later
            ids: list[str] = []
            with httpx.Client(base_url=base, timeout=120) as http:
                features = new.drop(columns="Status")
                for start in range(0, len(features), 200):
                    r = http.post("/predict", json={
                        "records": records(features.iloc[start:start + 200])})
                    assert r.status_code == 200, r.text
                    assert r.json()["model_version"] == "1"
                    ids += r.json()["prediction_ids"]
            assert len(ids) == len(set(ids)) == len(new)
            wait_logged(logdir, ids)
            pd.DataFrame({"prediction_id": ids, "Status": new["Status"].to_numpy()}).to_csv(
                labels_path, index=False)

            # 4. CT: reference + labelled logged rows, judged on the stable holdout of new rows
            result = run_continuous_training(
                pipeline_config(tmp_path, uri, ref_path, GOOD), predictions=str(logdir),
                labels=str(labels_path), force=True)
            assert result.retrained and result.new_rows == len(new), result
            champion = str(client.get_model_version_by_alias("credit", "champion").version)
            if result.promoted:
                assert champion == result.model_version != "1"
            else:
                assert champion == "1"
            assert result.promoted, result.reasons  # GOOD beats WEAK on the fair holdout

            # judged on exactly the hash-holdout rows among the new rows: the champion trained
            # on reference rows only, and the challenger's training excluded the holdout
            tags = client.get_model_version("credit", result.model_version).tags
            judged = int(tags["raylane.judging.rows"])
            definition = HoldoutDefinition(
                fraction=float(tags["raylane.holdout.fraction"]),
                key_columns=tuple(tags["raylane.holdout.key"].split(",")),
                hash_seed=int(tags["raylane.holdout.hash_seed"]))
            assert 0 < judged == int(holdout_mask(new, definition).sum()) < len(new)
            assert tags["raylane.judging.champion.version"] == "1"
            scores = {k: float(tags[f"raylane.judging.{k}"]) for k in ("challenger", "champion")}
            assert scores["challenger"] > scores["champion"], scores

            # 5. the service picks the new champion up (1 s poll + a load) under traffic
            traffic.wait_for(result.model_version, count=20, timeout=90)
        finally:
            traffic.stop()

    assert traffic.errors == [], traffic.errors[:5]
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert traffic.versions["1"] > 0 and traffic.versions[result.model_version] > 0, \
        traffic.versions
