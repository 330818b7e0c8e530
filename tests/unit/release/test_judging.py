"""The stable holdout (raylane/data/holdout.py) and the fair judge (raylane/release/judging.py):
real data,
real ONNX graphs, a real SQLite MLflow registry; no Ray."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from support.paths import CREDIT_CSV, ROOT
from support.serving import Trained, train

from raylane.config import load_config
from raylane.data.holdout import HoldoutDefinition, holdout_mask, row_buckets
from raylane.data.read import Split
from raylane.model.onnx_model import OnnxModel
from raylane.release.gates import GateResult
from raylane.release.judging import JudgingSet, decision_from, judge, score_graph
from raylane.release.publish import publish
from raylane.tracking.experiments import open_experiment
from raylane.tracking.runs import mlflow_client, parent_run
from raylane.training.job import load_data

CONFIG = ROOT / "tune_configs" / "credit_xgboost.yaml"


def credit() -> pd.DataFrame:
    return pd.read_csv(CREDIT_CSV)


def config(tmp_path: Path, data: Path, *extra: str):
    return load_config(CONFIG, [f"data.path={data}", f"mlflow.tracking_uri=sqlite:///"
                                f"{tmp_path / 'mlflow.db'}", *extra])


def test_a_rows_bucket_depends_on_its_values_only():
    frame = credit()
    key = list(frame.columns)
    buckets = row_buckets(frame, key, 0)
    # other rows around it, another order of rows and columns, ints read as floats: same bucket
    shuffled = frame.sample(frac=1.0, random_state=1)[key[::-1]]
    assert (row_buckets(shuffled, key, 0) == buckets[shuffled.index.to_numpy()]).all()
    as_float = frame.astype({c: "float64" for c in frame.select_dtypes("number").columns})
    assert (row_buckets(as_float, key, 0) == buckets).all()
    assert (row_buckets(frame.head(100), key, 0) == buckets[:100]).all()
    # another seed moves the holdout; the fraction holds
    assert (row_buckets(frame, key, 1) != buckets).mean() > 0.9
    mask = holdout_mask(frame, HoldoutDefinition(0.2, tuple(key), 0))
    assert 0.17 < mask.mean() < 0.23


def test_new_rows_judged_only_on_holdout_rows_no_model_trained_on(tmp_path):
    frame = credit()
    reference, new = frame.iloc[:3000], frame.iloc[3000:]
    ref_path = tmp_path / "reference.csv"
    reference.to_csv(ref_path, index=False)
    # the same new rows twice (a label logged twice): copies must never straddle train/holdout
    new = pd.concat([new, new], ignore_index=True)
    cfg = config(tmp_path, ref_path)
    _, before = load_data(cfg)                       # what the champion was trained on
    _, after = load_data(cfg, new_rows=new)          # what the challenger is trained on

    def keys(x: pd.DataFrame, y: np.ndarray) -> set:
        return set(map(tuple, x.assign(_y=y).astype(str).to_numpy()))

    holdout = keys(after.holdout.X, after.holdout.y)
    judged = keys(after.judge.X, after.judge.y)
    trained_challenger = keys(after.train.X, after.train.y) | keys(after.valid.X, after.valid.y)
    trained_champion = keys(before.train.X, before.train.y) | keys(before.valid.X, before.valid.y)
    assert after.holdout_definition["new_rows"] == len(new)
    assert judged and judged <= holdout
    assert not judged & trained_challenger and not judged & trained_champion
    assert not holdout & trained_challenger
    # every judged row is a new row
    new_prepared = load_data(config(tmp_path, _write(tmp_path, new)))[1]
    new_keys = keys(pd.concat([new_prepared.train.X, new_prepared.valid.X,
                               new_prepared.holdout.X]),
                    np.r_[new_prepared.train.y, new_prepared.valid.y, new_prepared.holdout.y])
    assert judged <= new_keys
    # and the reference's holdout rows stay holdout rows after the new data arrived
    assert keys(before.holdout.X, before.holdout.y) <= holdout


def _write(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "new.csv"
    frame.to_csv(path, index=False)
    return path


def test_with_a_time_column_the_judging_rows_are_the_newest(tmp_path):
    frame = credit()
    frame["ts"] = pd.date_range("2026-01-01", periods=len(frame), freq="h").astype(str)
    path = _write(tmp_path, frame)
    cfg = config(tmp_path, path, "judging.time_column=ts", "judging.newest_fraction=0.25")
    _, data = load_data(cfg)
    assert "ts" not in data.schema.feature_names
    newest = frame.iloc[int(len(frame) * 0.75):].drop(columns="ts")
    expected = holdout_mask(newest, HoldoutDefinition(
        0.2, tuple(sorted(newest.columns)), 0)).sum()
    assert abs(len(data.judge.y) - expected) <= 1
    assert data.holdout_definition["time_column"] == "ts"


# ---------------------------------------------------------------------------- the judge


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("judging")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow_client(uri)
    return SimpleNamespace(uri=uri, client=client, root=root,
                           experiment_id=open_experiment(client, "judging-tests"))


@pytest.fixture(scope="module")
def models() -> dict[str, Trained]:
    return {"small": train("credit", n_estimators=3, seed=0),
            "big": train("credit", n_estimators=40, seed=0)}


def publish_in_run(store, name: str, trained: Trained, judging: JudgingSet | None = None):
    with parent_run(store.client, store.experiment_id, run_name=name) as run_id:
        return publish(trained.pipeline, trained.schema, trained.data.holdout,
                       metric=trained.metric, gates=GateResult(passed=True), client=store.client,
                       registered_model=name, run_id=run_id, judging=judging)


def test_both_models_are_scored_through_their_graphs(store, models):
    small, big = models["small"], models["big"]
    publish_in_run(store, "graphs", small)
    challenger = OnnxModel(big.onnx_bytes, big.schema)
    rows = big.data.holdout
    verdict = judge(store.client, "graphs", challenger, JudgingSet(rows=rows), big.metric)
    assert verdict.challenger_score == score_graph(challenger, rows, big.metric)
    assert verdict.champion_score == score_graph(OnnxModel(small.onnx_bytes, small.schema), rows,
                                                 big.metric)
    assert verdict.challenger_wins and verdict.champion_version == "1"


def test_a_near_tie_keeps_the_champion(store, models):
    small, big = models["small"], models["big"]
    publish_in_run(store, "near", small)
    rows = big.data.holdout
    gain = (score_graph(OnnxModel(big.onnx_bytes, big.schema), rows, big.metric)
            - score_graph(OnnxModel(small.onnx_bytes, small.schema), rows, big.metric))
    assert gain > 0
    held = publish_in_run(store, "near", big, JudgingSet(rows=rows, min_improvement=gain + 1e-3))
    assert not held.decision.promoted
    assert f"by more than {gain + 1e-3:g}" in held.decision.reasons[0]
    won = publish_in_run(store, "near", big, JudgingSet(rows=rows, min_improvement=gain / 2))
    assert won.decision.promoted
    tags = store.client.get_model_version("near", won.version.version).tags
    assert tags["raylane.judging.champion.version"] == "1"
    assert float(tags["raylane.judging.challenger"]) > float(tags["raylane.judging.champion"])
    assert tags["raylane.judging.rows"] == str(len(rows.y))


def test_too_few_judging_rows_keep_the_champion(store, models):
    small, big = models["small"], models["big"]
    publish_in_run(store, "few", small)
    rows = Split(big.data.holdout.X.head(10), big.data.holdout.y[:10])
    held = publish_in_run(store, "few", big, JudgingSet(rows=rows, min_rows=30))
    assert not held.decision.promoted and "only 10 judging rows" in held.decision.reasons[0]


def test_a_champion_whose_files_cannot_be_read_keeps_its_alias(store, models):
    """A registry or artifact-store failure is not 'no champion': the challenger waits."""
    small, big = models["small"], models["big"]
    first = publish_in_run(store, "flaky", small)
    source = store.client.get_model_version_download_uri("flaky", first.version.version)
    shutil.rmtree(source.removeprefix("file://"))  # the artifact store lost the champion's files
    held = publish_in_run(store, "flaky", big)
    assert not held.decision.promoted
    assert "champion v1 could not be fetched" in held.decision.reasons[0]
    assert str(store.client.get_model_version_by_alias("flaky", "champion").version) == "1"


def test_gates_and_verdict_both_count():
    from raylane.release.judging import Verdict

    verdict = Verdict(metric="roc_auc", rows=100, challenger_score=0.9, champion_score=0.8)
    assert decision_from(verdict, GateResult(passed=True)).promoted
    failed = decision_from(verdict, GateResult(passed=False, reasons=["below the floor"]))
    assert not failed.promoted and failed.reasons == ["below the floor"]
