"""Score a table with a registered graph, block by block: each row is checked as the HTTP
service checks a request's row (raylane.model.feeds) and scored by ONNX Runtime, or
rejected with the reason the service would give.

One output schema for both (so every block writes alike): the row's id, the model version, the
prediction and the class probabilities (classification) for scored rows; the reason and the row
as JSON for rejected ones.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from raylane.model.feeds import RequestError, feeds_from_columns
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import FeatureSchema
from raylane.serving.prediction_ids import new_prediction_ids

ID, VERSION, PREDICTION, REASON, INPUT = "id", "model_version", "prediction", "reason", "input"


def output_columns(schema: FeatureSchema) -> list[str]:
    probabilities = [f"p_{c}" for c in schema.class_labels or []] \
        if schema.task == "classification" else []
    return [ID, VERSION, PREDICTION, *probabilities, REASON, INPUT]


def _json_values(series: pd.Series) -> list:
    values = series.astype(object).where(series.notna(), None).tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _row_reasons(columns: dict[str, list], schema: FeatureSchema, n: int) -> list[str | None]:
    """Each row's reason for refusal (None: acceptable), checking one row at a time: only for a
    block that failed as a whole."""
    reasons: list[str | None] = []
    for i in range(n):
        try:
            feeds_from_columns({c: [v[i]] for c, v in columns.items()}, schema, 1)
            reasons.append(None)
        except RequestError as exc:
            reasons.append(exc.message.replace("row 0", f"row {i}").replace("[0]", ""))
    return reasons


class Scorer:
    """A Ray Data ``map_batches`` callable (one ONNX Runtime session per actor)."""

    def __init__(self, onnx_bytes: bytes, schema_json: str, version: str,
                 id_column: str | None = None) -> None:
        self.schema = FeatureSchema.from_json(schema_json)
        self.model = OnnxModel(onnx_bytes, self.schema)
        self.version = version
        self.id_column = id_column

    def __call__(self, batch: pa.Table | pd.DataFrame) -> pd.DataFrame:
        if isinstance(batch, pa.Table):
            batch = batch.to_pandas()  # NumPy dtypes and NaN, as a client's JSON would decode
        schema, n = self.schema, len(batch)
        ids = (batch[self.id_column].astype(str).tolist() if self.id_column
               else new_prediction_ids(n))
        out = pd.DataFrame({ID: ids, VERSION: self.version})
        absent = [c for c in schema.feature_names if c not in batch.columns]
        columns = {c: _json_values(batch[c]) for c in schema.feature_names if c in batch}
        if absent:
            reasons: list[str | None] = [f"missing columns {absent}"] * n
        else:
            try:
                feeds = feeds_from_columns(columns, schema, n)
                reasons = [None] * n
            except RequestError:
                reasons = _row_reasons(columns, schema, n)
        ok = np.array([r is None for r in reasons], dtype=bool)
        out[PREDICTION] = pd.Series([None] * n, dtype=object)
        labels = schema.class_labels or []
        for label in labels:
            out[f"p_{label}"] = np.full(n, np.nan, dtype=np.float64)
        if ok.any():
            if not ok.all():
                feeds = feeds_from_columns(
                    {c: [v[i] for i in np.flatnonzero(ok)] for c, v in columns.items()},
                    schema, int(ok.sum()))
            pred = self.model.run(feeds)
            if schema.task == "classification":
                out.loc[ok, PREDICTION] = [labels[i] for i in pred.labels]
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
        for i, record in zip(refused, batch.iloc[refused].to_dict(orient="records"), strict=True):
            inputs[i] = json.dumps(record, default=str)
        out[INPUT] = inputs
        return out[output_columns(schema)]
