"""Batch scoring's per-block function: the rows serving would accept are scored exactly as the
graph scores them, the others rejected with serving's reason, ids kept or made."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from tiny_serving_model import ROWS, SCHEMA, tiny_onnx

from raylane.batch import scoring
from raylane.batch.scoring import REJECTED_COLUMNS, Scorer, output_columns, scored_columns
from raylane.model.onnx_model import OnnxModel


def test_good_rows_are_scored_and_bad_rows_carry_serving_reasons():
    onnx_bytes = tiny_onnx()
    scorer = Scorer(onnx_bytes, SCHEMA.to_json(), version="3", id_column="key")
    batch = ROWS.assign(key=[f"k{i}" for i in range(len(ROWS))]).astype({"age": object})
    batch.loc[2, "age"] = "old"  # not a number
    batch.loc[5, "income"] = float("inf")  # not finite
    out = scorer(batch).to_pandas()
    assert list(out.columns) == output_columns(SCHEMA)
    assert out["id"].tolist() == batch["key"].tolist()
    assert (out["model_version"] == "3").all()
    bad = out["reason"].notna()
    assert bad.tolist() == [i in (2, 5) for i in range(len(ROWS))]
    assert "age" in out.loc[2, "reason"] and "income" in out.loc[5, "reason"]
    assert '"old"' in out.loc[2, "input"] and out.loc[~bad, "input"].isna().all()
    good = ROWS[~bad.to_numpy()]
    expected = OnnxModel(onnx_bytes, SCHEMA).predict_frame(good)
    np.testing.assert_allclose(out.loc[~bad, "p_good"], expected.probabilities[:, 1], rtol=1e-6)
    assert out.loc[~bad, "prediction"].tolist() == [SCHEMA.class_labels[i]
                                                   for i in expected.labels]


def test_without_an_id_column_each_row_gets_a_prediction_id_and_missing_columns_reject_all():
    scorer = Scorer(tiny_onnx(), SCHEMA.to_json(), version="1")
    out = scorer(ROWS).to_pandas()
    assert out["id"].str.len().eq(32).all() and out["id"].is_unique
    assert out["reason"].isna().all()
    out = scorer(ROWS.drop(columns=["home"])).to_pandas()
    assert out["reason"].str.contains("missing columns").all()
    assert pd.isna(out["p_good"]).all()


def one_row_reason(row: pd.Series, i: int) -> str | None:
    """What serving says of this row alone, numbered as row ``i`` of its block."""
    from raylane.model.feeds import RequestError, feeds_from_columns

    values = {c: [None if pd.isna(v) else v.item() if isinstance(v, np.generic) else v]
              for c, v in row[SCHEMA.feature_names].items()}
    try:
        feeds_from_columns(values, SCHEMA, 1)
    except RequestError as exc:
        return exc.message.replace("row 0", f"row {i}").replace("[0]", "")
    return None


@pytest.mark.parametrize("as_object", [False, True], ids=["typed", "age-as-object"])
def test_bad_rows_anywhere_in_a_large_block_get_their_own_reasons(as_object):
    """Rows at the ends and on either side of the halving's boundaries, in a block whose columns
    are typed (checked by column) or not (value by value)."""
    onnx_bytes = tiny_onnx()
    scorer = Scorer(onnx_bytes, SCHEMA.to_json(), version="2")
    batch = pd.concat([ROWS] * 40, ignore_index=True)  # 320 rows
    batch.loc[[17, 160], "home"] = [None, "other"]  # accepted: missing and unseen categories
    batch.loc[159, "income"] = np.nan  # a missing value, not a refusal
    bad = {0: ("income", np.inf), 31: ("age", -np.inf), 32: ("income", 1e39),
           319: ("age", np.inf)}
    if as_object:
        batch = batch.astype({"age": object})
        bad[200] = ("age", "forty")
    for i, (column, value) in bad.items():
        batch.loc[i, column] = value
    out = scorer(batch).to_pandas()
    expected = [one_row_reason(batch.loc[i], i) for i in range(len(batch))]
    assert [r if isinstance(r, str) else None for r in out["reason"]] == expected
    assert sorted(i for i, r in enumerate(expected) if r) == sorted(bad)
    good = batch.drop(index=list(bad)).astype({"age": np.float64})
    scored = OnnxModel(onnx_bytes, SCHEMA).predict_frame(good)
    np.testing.assert_allclose(out.loc[good.index, "p_good"], scored.probabilities[:, 1],
                               rtol=1e-6)


def test_given_a_rejected_location_refused_rows_are_written_there_and_scored_rows_returned(
        tmp_path):
    scorer = Scorer(tiny_onnx(), SCHEMA.to_json(), version="4", id_column="key",
                    rejected_to=str(tmp_path), prefix="run1-")
    batch = ROWS.assign(key=[f"k{i}" for i in range(len(ROWS))])
    assert scorer(batch).column_names == scored_columns(SCHEMA)
    assert list(tmp_path.iterdir()) == []  # a block with no refused row writes nothing
    batch.loc[[1, 6], "income"] = float("inf")
    out = scorer(batch).to_pandas()
    assert list(out.columns) == scored_columns(SCHEMA)
    assert out["id"].tolist() == [k for i, k in enumerate(batch["key"]) if i not in (1, 6)]
    [written] = list(tmp_path.iterdir())
    assert written.name.startswith("run1-") and written.suffix == ".parquet"
    rejected = pd.read_parquet(written)
    assert list(rejected.columns) == REJECTED_COLUMNS
    assert rejected["id"].tolist() == ["k1", "k6"]
    assert rejected["reason"].str.contains("income").all()
    assert (rejected["model_version"] == "4").all()


def test_a_task_keeps_one_scorer_per_run_in_its_worker_process(monkeypatch):
    monkeypatch.setattr(scoring, "_SCORERS", {})
    kwargs = {"onnx_bytes": tiny_onnx(), "schema_json": SCHEMA.to_json(), "version": "5",
              "id_column": None, "rejected_to": None}
    [first] = scoring.score_block(ROWS, **kwargs, prefix="run-a-")
    first = first.to_pandas()
    assert list(first.columns) == output_columns(SCHEMA) and first["reason"].isna().all()
    session = scoring._SCORERS["run-a-"]
    list(scoring.score_block(ROWS, **kwargs, prefix="run-a-"))
    assert scoring._SCORERS["run-a-"] is session  # built once, used again
    for run in "bcde":
        list(scoring.score_block(ROWS, **kwargs, prefix=f"run-{run}-"))
    assert list(scoring._SCORERS) == ["run-b-", "run-c-", "run-d-", "run-e-"]  # a few, newest


@pytest.mark.parametrize("batch_size", [1, 3, len(ROWS), None])
def test_a_task_scores_a_whole_block_in_slices_of_the_batch_size(monkeypatch, tmp_path,
                                                                   batch_size):
    """Ray Data hands a task whole blocks (so it fuses reading, scoring and writing): the task
    scores them ``batch_size`` rows at a time, every row once, in order, refused rows apart."""
    monkeypatch.setattr(scoring, "_SCORERS", {})
    frame = ROWS.assign(key=[f"k{i}" for i in range(len(ROWS))]).astype({"income": float})
    frame.loc[4, "income"] = float("inf")  # refused: not finite
    block = pa.Table.from_pandas(frame, preserve_index=False)
    parts = list(scoring.score_block(
        block, onnx_bytes=tiny_onnx(), schema_json=SCHEMA.to_json(), version="7",
        id_column="key", rejected_to=str(tmp_path), prefix="slices-", batch_size=batch_size))
    step = batch_size or len(ROWS)
    assert len(parts) == -(-len(ROWS) // step)
    assert all(p.schema == parts[0].schema for p in parts)
    scored = pa.concat_tables(parts).to_pandas()
    rejected = pd.concat([pd.read_parquet(f) for f in tmp_path.iterdir()])
    assert sorted(scored["id"].tolist() + rejected["id"].tolist()) == sorted(block["key"]
                                                                             .to_pylist())
    assert scored["id"].tolist() == [f"k{i}" for i in range(len(ROWS)) if i != 4]
    assert rejected["id"].tolist() == ["k4"]


def test_an_empty_block_gives_one_empty_table(monkeypatch):
    monkeypatch.setattr(scoring, "_SCORERS", {})
    [out] = scoring.score_block(ROWS.iloc[:0], onnx_bytes=tiny_onnx(),
                                schema_json=SCHEMA.to_json(), version="8", id_column=None,
                                rejected_to=None, prefix="empty-", batch_size=4)
    assert out.num_rows == 0 and out.column_names == output_columns(SCHEMA)


def test_every_block_has_the_same_arrow_types_even_when_all_or_none_is_refused():
    """A block's table is written as it is, so an all-refused block must not give the prediction
    a null type that the scored blocks' files disagree with."""
    scorer = Scorer(tiny_onnx(), SCHEMA.to_json(), version="6", id_column="key")
    batch = ROWS.assign(key=range(len(ROWS)))  # an integer id column: ids as text
    scored = scorer(batch)
    refused = scorer(batch.assign(income=float("inf")))
    assert scored.schema == refused.schema
    assert scored.schema.field("prediction").type == pa.string()
    assert scored.schema.field("p_good").type == pa.float64()
    assert scored.column("id").to_pylist() == [str(i) for i in range(len(ROWS))]
    assert refused.column("prediction").null_count == len(ROWS)
    assert refused.column("reason").null_count == 0
    assert scored.column("reason").null_count == len(ROWS)


def test_ids_of_any_column_type_are_text():
    """Whatever the id column holds (mixed types, lists), every row is scored and its id is
    the value's text; a missing id stays missing."""
    scorer = Scorer(tiny_onnx(), SCHEMA.to_json(), version="7", id_column="key")
    keys = ["a", 2, 3.5, None, ["x"], "f", "g", "h"][:len(ROWS)]
    out = scorer(ROWS.assign(key=keys))
    assert out.column("reason").null_count == len(ROWS)
    assert out.column("id").to_pylist() == [None if k is None else str(k) for k in keys]
    typed = scorer(pa.Table.from_pandas(ROWS.assign(key=[1, None, *range(len(ROWS) - 2)]),
                                        preserve_index=False))
    assert typed.column("id").to_pylist()[:3] == ["1", None, "0"]
