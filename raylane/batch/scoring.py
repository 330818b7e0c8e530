"""Score a table with a registered graph, block by block: each row is checked as the HTTP
service checks a request's row and scored by ONNX Runtime, or rejected with the reason the
service would give. A block is checked by column (raylane.model.frame_feeds); one that may hold
a refused row goes through the service's own value-by-value path (raylane.model.feeds), which
names each refusal.

One output schema for both (so every block writes alike): the row's id, the model version, the
prediction and the class probabilities (classification) for scored rows; the reason and the row
as JSON for rejected ones. Given ``rejected_to``, a :class:`Scorer` writes a block's rejected rows
there itself (one Parquet file per block that has any) and returns the scored rows only, so a job
streams each block once: read, score, write.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raylane.data.sources import filesystem_for
from raylane.model.feeds import RequestError, feeds_from_columns
from raylane.model.frame_feeds import feeds_from_frame
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import FeatureSchema
from raylane.serving.prediction_ids import new_prediction_ids

ID, VERSION, PREDICTION, REASON, INPUT = "id", "model_version", "prediction", "reason", "input"


def scored_columns(schema: FeatureSchema) -> list[str]:
    """A scored row's columns: id, model version, prediction, class probabilities."""
    probabilities = [f"p_{c}" for c in schema.class_labels or []] \
        if schema.task == "classification" else []
    return [ID, VERSION, PREDICTION, *probabilities]


def output_columns(schema: FeatureSchema) -> list[str]:
    return [*scored_columns(schema), REASON, INPUT]


REJECTED_COLUMNS = [ID, VERSION, REASON, INPUT]


def _json_values(series: pd.Series) -> list:
    values = series.astype(object).where(series.notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]


LEAF_ROWS = 32  # below this, a failing part of a block is checked one row at a time


def _refusals(frame: pd.DataFrame, schema: FeatureSchema) -> list[str | None]:
    """Each row's reason for refusal (None: accepted) in a block that failed the by-column
    check: halves that pass it are accepted whole, the others halved again, and parts of
    :data:`LEAF_ROWS` rows checked one row at a time as serving checks a request's row. A few
    bad rows in a block cost a few small checks, not one per row."""
    reasons: list[str | None] = [None] * len(frame)

    def visit(lo: int, hi: int) -> None:
        if hi - lo <= LEAF_ROWS:
            columns = {c: _json_values(frame[c].iloc[lo:hi]) for c in schema.feature_names}
            for i in range(hi - lo):
                try:
                    feeds_from_columns({c: [v[i]] for c, v in columns.items()}, schema, 1)
                except RequestError as exc:
                    reasons[lo + i] = (exc.message.replace("row 0", f"row {lo + i}")
                                       .replace("[0]", ""))
            return
        mid = (lo + hi) // 2
        for a, b in ((lo, mid), (mid, hi)):
            if feeds_from_frame(frame.iloc[a:b], schema) is None:
                visit(a, b)

    visit(0, len(frame))
    return reasons


class Scorer:
    """A Ray Data ``map_batches`` callable (one ONNX Runtime session per actor). With
    ``rejected_to`` (a directory or URI; ``prefix`` starts its file names) it writes rejected rows
    there and returns scored rows only."""

    def __init__(self, onnx_bytes: bytes, schema_json: str, version: str,
                 id_column: str | None = None, rejected_to: str | None = None,
                 prefix: str = "") -> None:
        self.schema = FeatureSchema.from_json(schema_json)
        self.model = OnnxModel(onnx_bytes, self.schema)
        self.version = version
        self.id_column = id_column
        self.rejected = filesystem_for(rejected_to) if rejected_to else None
        self.prefix = prefix

    def __call__(self, batch: pa.Table | pd.DataFrame) -> pd.DataFrame:
        out = self.score(batch)
        if self.rejected is None:
            return out
        refused = out[REASON].notna().to_numpy()
        if refused.any():
            fs, directory = self.rejected
            table = pa.Table.from_pandas(out.loc[refused, REJECTED_COLUMNS], preserve_index=False)
            pq.write_table(table, f"{directory}/{self.prefix}{uuid.uuid4().hex}.parquet",
                           filesystem=fs)
            out = out.loc[~refused].reset_index(drop=True)
        return out[scored_columns(self.schema)]

    def score(self, batch: pa.Table | pd.DataFrame) -> pd.DataFrame:
        """Every row of ``batch``, scored or with its reason (:func:`output_columns`)."""
        if isinstance(batch, pa.Table):
            batch = batch.to_pandas()  # NumPy dtypes and NaN, as a client's JSON would decode
        schema, n = self.schema, len(batch)
        ids = (batch[self.id_column].astype(str).tolist() if self.id_column
               else new_prediction_ids(n))
        out = pd.DataFrame({ID: ids, VERSION: self.version})
        absent = [c for c in schema.feature_names if c not in batch.columns]
        feeds = None if absent else feeds_from_frame(batch, schema)
        if absent:
            reasons: list[str | None] = [f"missing columns {absent}"] * n
        elif feeds is None:
            reasons = _refusals(batch, schema)
        else:
            reasons = [None] * n
        ok = np.array([r is None for r in reasons], dtype=bool)
        out[PREDICTION] = pd.Series([None] * n, dtype=object)
        labels = schema.class_labels or []
        for label in labels:
            out[f"p_{label}"] = np.full(n, np.nan, dtype=np.float64)
        if ok.any():
            if feeds is None:  # some rows refused, or dtypes only checked value by value
                good = batch.iloc[np.flatnonzero(ok)]
                feeds = feeds_from_frame(good, schema)
                if feeds is None:
                    feeds = feeds_from_columns(
                        {c: _json_values(good[c]) for c in schema.feature_names}, schema, len(good))
            pred = self.model.run(feeds)
            if schema.task == "classification":
                out.loc[ok, PREDICTION] = np.asarray(labels, dtype=object)[pred.labels]
                for j, label in enumerate(labels):
                    out.loc[ok, f"p_{label}"] = pred.probabilities[:, j]
            else:
                out.loc[ok, PREDICTION] = pred.values.astype(np.float64)
        if schema.task == "regression":
            out[PREDICTION] = pd.to_numeric(out[PREDICTION])
        else:
            out[PREDICTION] = out[PREDICTION].astype(object)
        out[REASON] = reasons
        # Only refused rows carry their input: converting every row cost ~40% of a block's time.
        refused = np.flatnonzero(~ok)
        inputs: list[str | None] = [None] * n
        if len(refused):
            records = batch.iloc[refused].to_dict(orient="records")
            for i, record in zip(refused, records, strict=True):
                inputs[i] = json.dumps(record, default=str)
        out[INPUT] = inputs
        return out[output_columns(schema)]


_SCORERS: dict[str, Scorer] = {}  # this worker process's, by run (its prefix); a few at most
_KEPT = 4


def score_block(batch: pa.Table | pd.DataFrame, *, onnx_bytes: bytes, schema_json: str,
                version: str, id_column: str | None, rejected_to: str | None,
                prefix: str) -> pd.DataFrame:
    """A Ray Data task's ``map_batches`` function: the run's :class:`Scorer` (``prefix`` names
    the run), created once per worker process (Ray reuses its workers for many tasks), applied
    to ``batch``. So tasks keep a session each as actors do, and Ray Data can fuse reading,
    scoring and writing a block into one task."""
    scorer = _SCORERS.get(prefix)
    if scorer is None:
        while len(_SCORERS) >= _KEPT:
            _SCORERS.pop(next(iter(_SCORERS)))
        scorer = _SCORERS[prefix] = Scorer(onnx_bytes, schema_json, version, id_column,
                                           rejected_to, prefix)
    return scorer(batch)
