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
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
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
    there and returns scored rows only.

    Output is an Arrow table built from the session's NumPy results: Ray Data writes it as is,
    and a block costs no pandas frame (building the output in pandas was a fifth of a block's
    time)."""

    def __init__(self, onnx_bytes: bytes, schema_json: str, version: str,
                 id_column: str | None = None, rejected_to: str | None = None,
                 prefix: str = "") -> None:
        self.schema = FeatureSchema.from_json(schema_json)
        self.model = OnnxModel(onnx_bytes, self.schema)
        self.version = version
        self.id_column = id_column
        self.rejected = filesystem_for(rejected_to) if rejected_to else None
        self.prefix = prefix
        self.labels = pa.array(self.schema.class_labels or [], pa.string())

    def __call__(self, batch: pa.Table | pd.DataFrame) -> pa.Table:
        out = self.score(batch)
        if self.rejected is None:
            return out
        refused = pc.is_valid(out.column(REASON))
        if pc.any(refused).as_py():
            fs, directory = self.rejected
            pq.write_table(out.filter(refused).select(REJECTED_COLUMNS),
                           f"{directory}/{self.prefix}{uuid.uuid4().hex}.parquet", filesystem=fs)
            out = out.filter(pc.invert(refused))
        return out.select(scored_columns(self.schema))

    def _ids(self, batch: pa.Table | pd.DataFrame, n: int) -> pa.Array | pa.ChunkedArray:
        """The id column as text (a null id stays null), or new prediction ids."""
        if not self.id_column:
            return pa.array(new_prediction_ids(n), pa.string())
        column = batch[self.id_column]
        try:
            return pa.array(column).cast(pa.string()) if isinstance(column, pd.Series) \
                else column.cast(pa.string())
        except pa.ArrowException:  # no cast to text (a list) or mixed types: each value's str
            values = column.tolist() if isinstance(column, pd.Series) else column.to_pylist()
            return pa.array([None if v is None or (isinstance(v, float) and v != v) else str(v)
                             for v in values], pa.string())

    def score(self, batch: pa.Table | pd.DataFrame) -> pa.Table:
        """Every row of ``batch``, scored or with its reason (:func:`output_columns`): a refused
        row has no prediction or probabilities, a scored row no reason or input."""
        # to_pandas: NumPy dtypes and NaN, as a client's JSON would decode
        frame = batch.to_pandas() if isinstance(batch, pa.Table) else batch
        schema, n = self.schema, len(frame)
        absent = [c for c in schema.feature_names if c not in frame.columns]
        feeds = None if absent else feeds_from_frame(frame, schema)
        reasons: list[str | None] | None = None  # None: every row accepted
        if absent:
            reasons = [f"missing columns {absent}"] * n
        elif feeds is None:
            reasons = _refusals(frame, schema)
        ok = np.ones(n, dtype=bool) if reasons is None \
            else np.array([r is None for r in reasons], dtype=bool)
        refused = None if ok.all() else ~ok

        pred = None
        if ok.any():
            if feeds is None:  # some rows refused, or dtypes only checked value by value
                good = frame.iloc[np.flatnonzero(ok)]
                feeds = feeds_from_frame(good, schema)
                if feeds is None:
                    feeds = feeds_from_columns(
                        {c: _json_values(good[c]) for c in schema.feature_names}, schema, len(good))
            pred = self.model.run(feeds)

        def spread(values: np.ndarray) -> np.ndarray:
            """The scored rows' values in their rows of the block (the others masked)."""
            if refused is None:
                return values
            full = np.zeros(n, dtype=values.dtype)
            full[ok] = values
            return full

        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            ID: self._ids(batch, n), VERSION: pa.repeat(pa.scalar(self.version, pa.string()), n)}
        if schema.task == "classification":
            labels = np.zeros(0, np.int64) if pred is None else np.asarray(pred.labels, np.int64)
            columns[PREDICTION] = self.labels.take(pa.array(spread(labels), mask=refused))
            for j, label in enumerate(schema.class_labels or []):
                p = np.zeros(0) if pred is None else pred.probabilities[:, j]
                columns[f"p_{label}"] = pa.array(spread(p.astype(np.float64)), mask=refused)
        else:
            values = np.zeros(0) if pred is None else pred.values
            columns[PREDICTION] = pa.array(spread(values.astype(np.float64)), mask=refused)
        if refused is None:
            columns[REASON] = columns[INPUT] = pa.nulls(n, pa.string())
        else:
            # Only refused rows carry their input: converting every row cost ~40% of a block.
            rows = np.flatnonzero(refused)
            inputs: list[str | None] = [None] * n
            for i, record in zip(rows, frame.iloc[rows].to_dict(orient="records"), strict=True):
                inputs[i] = json.dumps(record, default=str)
            columns[REASON] = pa.array(reasons, pa.string())
            columns[INPUT] = pa.array(inputs, pa.string())
        return pa.table(columns)


_SCORERS: dict[str, Scorer] = {}  # this worker process's, by run (its prefix); a few at most
_KEPT = 4


def score_block(batch: pa.Table | pd.DataFrame, *, onnx_bytes: bytes, schema_json: str,
                version: str, id_column: str | None, rejected_to: str | None,
                prefix: str, batch_size: int | None = None) -> Iterator[pa.Table]:
    """A Ray Data task's ``map_batches`` function: the run's :class:`Scorer` (``prefix`` names
    the run), created once per worker process (Ray reuses its workers for many tasks), applied
    to ``batch`` in slices of ``batch_size`` rows (all of it without), one output table each.

    So tasks keep a session each as actors do, and the job can hand each task whole blocks
    (``map_batches(batch_size=None)``): Ray Data then fuses reading, scoring and writing into
    one task per read unit, and no block goes through the object store."""
    scorer = _SCORERS.get(prefix)
    if scorer is None:
        while len(_SCORERS) >= _KEPT:
            _SCORERS.pop(next(iter(_SCORERS)))
        scorer = _SCORERS[prefix] = Scorer(onnx_bytes, schema_json, version, id_column,
                                           rejected_to, prefix)
    step = batch_size or max(len(batch), 1)
    for start in range(0, max(len(batch), 1), step):
        part = batch.slice(start, step) if isinstance(batch, pa.Table) \
            else batch.iloc[start:start + step]
        yield scorer(part)
