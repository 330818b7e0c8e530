"""Export a fitted pipeline (preprocessing + model) to one ONNX graph and check it against the
native model before anything is registered.

The graph around the model (one input per raw column, the shared preprocessing) is built here;
the model's own converter comes from its family (``Family.onnx_converter``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.pipeline import Pipeline

from raylane.model.families import family_of
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import FeatureSchema
from raylane.serving.columns import RequestError, feeds_from_columns

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


class ParityError(RuntimeError):
    """The ONNX graph does not reproduce the native model within tolerance."""


@dataclass
class ParityReport:
    rows: int
    max_abs_diff: float
    mismatched_rows: int
    label_agreement: float | None
    atol: float
    rtol: float
    max_mismatch_fraction: float

    @property
    def passed(self) -> bool:
        return self.mismatched_rows <= self.max_mismatch_fraction * self.rows

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def to_onnx(pipeline: Pipeline, schema: FeatureSchema) -> bytes:
    """Convert ``pipeline`` to a graph with one ``[N, 1]`` input per raw column.

    Classifiers output ``label`` (class index) and ``probabilities`` ``[N, K]``; regressors
    output ``variable`` ``[N, 1]``.
    """
    initial_types = [
        (c.name, FloatTensorType([None, 1]) if c.kind == "numeric" else StringTensorType([None, 1]))
        for c in schema.columns
    ]
    name, fitted = pipeline.steps[-1]
    family = family_of(fitted)
    model = family.for_onnx(fitted)
    if model is not fitted:
        pipeline = Pipeline([*pipeline.steps[:-1], (name, model)])
    options = {id(model): {"zipmap": False}} if schema.task == "classification" else None
    with family.onnx_converter():
        onx = convert_sklearn(
            pipeline, initial_types=initial_types, target_opset=TARGET_OPSET, options=options
        )
    onx.doc_string = f"raylane {schema.task} model for target {schema.target!r}"
    return onx.SerializeToString()


def client_feeds(rows: pd.DataFrame, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """The graph's inputs as serving builds them from ``rows`` sent as JSON values."""
    columns = {}
    for name in schema.feature_names:
        series = rows[name]
        values = series.astype(object).where(series.notna(), None).tolist()
        columns[name] = [v.item() if isinstance(v, np.generic) else v for v in values]
    return feeds_from_columns(columns, schema, len(rows))


def check_parity(
    pipeline: Pipeline,
    onnx_model: OnnxModel,
    frame: pd.DataFrame,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    max_mismatch_fraction: float = 0.001,
    raw: pd.DataFrame | None = None,
) -> ParityReport:
    """Compare ONNX and native outputs (probabilities, or predictions) row by row on ``frame``.

    The native model gets ``frame`` (features as training prepared them); the graph gets what
    serving makes of the same rows sent by a client: ``raw`` (the rows as in the data, before
    preparation; else ``frame``) through serving's own request decoding. So a difference
    between how training and serving read a value (a category code 1.0 vs 1) fails parity.
    """
    try:
        feeds = client_feeds(frame if raw is None else raw, onnx_model.schema)
    except RequestError as exc:
        raise ParityError(f"serving would refuse a holdout row: {exc.message}") from None
    prediction = onnx_model.run(feeds)
    if onnx_model.schema.task == "classification":
        native = pipeline.predict_proba(frame)
        exported = prediction.probabilities
        label_agreement = float(np.mean(prediction.labels == native.argmax(axis=1)))
    else:
        native = pipeline.predict(frame)
        exported = prediction.values
        label_agreement = None
    native = np.asarray(native, dtype=np.float64).reshape(len(frame), -1)
    exported = np.asarray(exported, dtype=np.float64).reshape(len(frame), -1)
    if native.shape != exported.shape:
        raise ParityError(f"ONNX output shape {exported.shape} != native {native.shape}")
    diff = np.abs(native - exported)
    bad_cells = diff > atol + rtol * np.abs(native)
    return ParityReport(
        rows=len(frame),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mismatched_rows=int(bad_cells.any(axis=1).sum()),
        label_agreement=label_agreement,
        atol=atol,
        rtol=rtol,
        max_mismatch_fraction=max_mismatch_fraction,
    )
