"""An ONNX Runtime session over a raylane graph: raw columns in, labels/probabilities/values out.

Used by the parity check at export, by the champion comparison, and by serving. It loads ONNX only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
from google.protobuf.message import Message
from pandas.api.types import is_numeric_dtype

from raylane.model.schema import (
    MISSING_CATEGORY,
    ColumnSpec,
    FeatureSchema,
    arrow_string_categories,
    category_values,
)


class UnsafeModelError(ValueError):
    """The ONNX file is not one raylane will load (for example, it references external data)."""


@dataclass
class Prediction:
    """Model output for a batch: class indices and probabilities, or regression values."""

    labels: np.ndarray | None = None  # int class indices
    probabilities: np.ndarray | None = None  # [N, K] float32
    values: np.ndarray | None = None  # [N] float32 (regression)


def check_self_contained(model_bytes: bytes) -> onnx.ModelProto:
    """Parse ``model_bytes`` and refuse graphs whose tensors live in external files."""
    proto = onnx.load_model_from_string(model_bytes)
    for tensor in all_tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise UnsafeModelError(
                f"ONNX tensor {tensor.name!r} references external data; raylane only loads "
                "self-contained graphs"
            )
    return proto


def all_tensors(message: Message) -> Iterator[onnx.TensorProto]:
    """Every TensorProto anywhere in ``message``: initializers, sparse tensors' values and
    indices, node attributes, subgraphs, functions, training info (any field that holds one).

    A walk over the protobuf fields rather than a list of places, so a place ONNX adds (or one
    ``onnx.external_data_helper`` skips, such as sparse tensors) is not missed.
    """
    for _, value in message.ListFields():
        if isinstance(value, Message):
            children: Iterable[Any] = (value,)
        elif isinstance(value, (str, bytes, int, float)) or not value:
            continue
        elif isinstance(next(iter(value)), Message):  # a repeated message field
            children = value
        else:  # repeated scalars (tree ensembles hold long lists of them)
            continue
        for child in children:
            if isinstance(child, onnx.TensorProto):
                yield child
            yield from all_tensors(child)


class OnnxModel:
    """A loaded raylane ONNX graph and its feature schema."""

    def __init__(self, model_bytes: bytes, schema: FeatureSchema, intra_op_threads: int = 1):
        check_self_contained(model_bytes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.schema = schema
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = set(schema.feature_names) - {i.name for i in self.session.get_inputs()}
        if missing:
            raise UnsafeModelError(f"ONNX graph lacks inputs for columns {sorted(missing)}")

    def feeds_from_frame(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Build the graph's inputs from a DataFrame of raw columns (missing values allowed)."""
        feeds: dict[str, np.ndarray] = {}
        for col in self.schema.columns:
            series = frame[col.name]
            if col.kind == "numeric":
                # Already-numeric columns skip to_numeric (~25 us a column, most of a 1-row call).
                numbers = series if is_numeric_dtype(series) else pd.to_numeric(
                    series, errors="raise"
                )
                arr = numbers.to_numpy(dtype=np.float32, na_value=np.nan)
            else:  # spelled as serving spells a client's values (raylane.model.column_values)
                arr = self._categories(series, col)
            feeds[col.name] = arr.reshape(-1, 1)
        return feeds

    @staticmethod
    def _categories(series: pd.Series, col: ColumnSpec) -> np.ndarray:
        """A categorical column's values as the graph's strings: each distinct value spelled
        once (:func:`category_values`), missing ones as :data:`MISSING_CATEGORY`."""
        spell = col.recorded_spellings()
        from_arrow = arrow_string_categories(series, col.numeric_codes, spell)
        if from_arrow is not None:
            return from_arrow
        missing = series.isna().to_numpy()
        arr = np.full(len(series), MISSING_CATEGORY, dtype=object)
        present = ~missing
        if present.any():
            arr[present] = category_values(series.to_numpy()[present], col.numeric_codes)
        if spell:  # models that recorded a category otherwise (e.g. "1.0" for 1)
            arr[present] = [spell.get(v, v) for v in arr[present]]
        return arr

    def run(self, feeds: dict[str, np.ndarray]) -> Prediction:
        """Run the graph on prepared inputs (each ``[N, 1]``)."""
        outputs = self.session.run(None, feeds)
        if self.schema.task == "classification":
            named = dict(zip(self.output_names, outputs, strict=True))
            return Prediction(
                labels=np.asarray(named["label"]).reshape(-1),
                probabilities=np.asarray(named["probabilities"], dtype=np.float32),
            )
        return Prediction(values=np.asarray(outputs[0], dtype=np.float32).reshape(-1))

    def predict_frame(self, frame: pd.DataFrame) -> Prediction:
        return self.run(self.feeds_from_frame(frame))
