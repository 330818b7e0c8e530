"""Labels that arrive later, joined on prediction_id with the inputs the service logged: the
log is read with Ray Data, as the monitor reads it (a local Ray with one CPU)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from conftest import CREDIT_CSV, ROOT
from process_state import restored_environ

from raylane.config import load_config
from raylane.continuous import new_labelled_rows
from raylane.data.read import DataError
from raylane.training.job import load_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    with restored_environ():
        ray.init(num_cpus=1, include_dashboard=False)
        try:
            yield
        finally:
            ray.shutdown()


def credit() -> pd.DataFrame:
    return pd.read_csv(CREDIT_CSV)


def cfg(tmp_path, *extra):
    return load_config(ROOT / "tune_configs" / "credit_xgboost.yaml",
                       [f"data.path={CREDIT_CSV}", *extra])


def _log(path, frame: pd.DataFrame, ids: list[str]) -> None:
    """A prediction log file as the service writes it: prediction_id, timestamp, input struct."""
    features = frame.drop(columns="Status")
    struct = pa.StructArray.from_arrays(
        [pa.array(features[c].astype("float32") if c not in ("Home", "Marital", "Records", "Job")
                  else features[c].astype(str)) for c in features.columns],
        names=list(features.columns))
    pq.write_table(pa.table({
        "prediction_id": pa.array(ids),
        "timestamp": pa.array(np.full(len(ids), 1_795_000_000_000), pa.int64()).cast(
            pa.timestamp("ms", tz="UTC")),
        "model_name": pa.array(["credit"] * len(ids)),
        "model_version": pa.array(["1"] * len(ids)),
        "input": struct,
        "prediction": pa.array(["good"] * len(ids)),
    }), path)


def test_labels_join_the_logged_inputs_on_prediction_id(tmp_path):
    frame = credit().iloc[:300].reset_index(drop=True)
    ids = [f"id{i:04d}" for i in range(len(frame))]
    (tmp_path / "log").mkdir()
    _log(tmp_path / "log" / "predictions-1.parquet", frame.iloc[:200], ids[:200])
    _log(tmp_path / "log" / "predictions-2.parquet", frame.iloc[200:], ids[200:])
    # labels arrive for some predictions only, in another order, with one unknown id
    labels = pd.DataFrame({"prediction_id": [*ids[250:50:-2], "nope"],
                           "label": [*frame["Status"].iloc[250:50:-2], "good"]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    rows = new_labelled_rows(cfg(tmp_path), None, str(tmp_path / "log"),
                             str(tmp_path / "labels.csv"))
    assert len(rows) == 100 and set(rows["prediction_id"]) == set(ids[250:50:-2])
    by_id = rows.set_index("prediction_id")
    for i in (52, 150, 250):
        assert by_id.loc[ids[i], "Status"] == frame.loc[i, "Status"]
        assert by_id.loc[ids[i], "Amount"] == frame.loc[i, "Amount"]
        assert by_id.loc[ids[i], "Home"] == frame.loc[i, "Home"]
    # and the pipeline takes them as new rows (extra log columns are not features)
    _, data = load_data(cfg(tmp_path), new_rows=rows)
    assert data.holdout_definition["new_rows"] == 100
    assert "prediction_id" not in data.schema.feature_names


def test_labels_without_ids_or_target_are_refused(tmp_path):
    pd.DataFrame({"id": ["a"], "label": ["good"]}).to_csv(tmp_path / "l.csv", index=False)
    (tmp_path / "log").mkdir()
    _log(tmp_path / "log" / "p.parquet", credit().iloc[:2], ["a", "b"])
    with pytest.raises(DataError, match="prediction_id"):
        new_labelled_rows(cfg(tmp_path), None, str(tmp_path / "log"), str(tmp_path / "l.csv"))
    with pytest.raises(DataError, match="needs --predictions"):
        new_labelled_rows(cfg(tmp_path), None, None, str(tmp_path / "l.csv"))
