"""Read a table, infer its schema, prepare raw columns and split train / validation / holdout."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.model_selection import train_test_split

from raylane.schema import (
    MAX_RECORDED_CATEGORIES,
    MISSING_CATEGORY,
    ColumnSpec,
    FeatureSchema,
    Task,
)

log = logging.getLogger(__name__)
# An integer target with at most this many distinct values is read as class labels.
MAX_INFERRED_CLASSES = 20


class DataError(ValueError):
    """The data does not fit the config; the message names the config key."""


def read_table(path: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Read CSV or Parquet from a local path or any fsspec URI (s3://, gs://, https://...)."""
    is_local = "://" not in path
    if is_local and not Path(path).exists():
        raise DataError(f"data.path: file not found: {path!r}")
    suffixes = Path(path.split("?")[0]).suffixes
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            return pd.read_parquet(path, columns=columns)
        if ".csv" in suffixes or ".tsv" in suffixes:
            sep = "\t" if ".tsv" in suffixes else ","
            return pd.read_csv(path, usecols=columns, sep=sep)
    except (OSError, ValueError) as exc:
        raise DataError(f"data.path: cannot read {path!r}: {exc}") from exc
    raise DataError(f"data.path: expected a .csv, .tsv or .parquet file, got {path!r}")


def infer_task(target: pd.Series) -> Task:
    """Classification for text, boolean and few-valued integer targets; regression otherwise."""
    values = target.dropna()
    if not ptypes.is_numeric_dtype(values) or ptypes.is_bool_dtype(values):
        return "classification"
    is_integral = ptypes.is_integer_dtype(values) or bool(np.all(np.mod(values, 1) == 0))
    if is_integral and values.nunique() <= MAX_INFERRED_CLASSES:
        return "classification"
    return "regression"


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    task: Task | None,
    categorical: list[str] | None = None,
    max_categories: int = 200,
) -> FeatureSchema:
    """Column kinds, dtypes and categories; the target's task and class labels.

    Text, boolean and category columns are categorical, as are those named in ``categorical``
    (integer-coded categories). Text columns with more than ``max_categories`` distinct values
    (identifiers, timestamps) are left out, with a warning.
    """
    if target not in frame.columns:
        raise DataError(
            f"data.target: column {target!r} not in the data; columns are {list(frame.columns)}"
        )
    categorical = set(categorical or [])
    unknown = categorical - set(frame.columns)
    if unknown:
        raise DataError(f"data.categorical: columns {sorted(unknown)} are not in the data")
    y = frame[target]
    if y.isna().all():
        raise DataError(f"data.target: column {target!r} has no values")
    task = task or infer_task(y)
    class_labels = None
    if task == "classification":
        class_labels = sorted({str(v) for v in y.dropna()})
        if len(class_labels) < 2:
            raise DataError(
                f"data.target: classification needs at least 2 classes; {target!r} has only "
                f"{class_labels}"
            )
    elif not ptypes.is_numeric_dtype(y):
        raise DataError(f"data.task: regression needs a numeric target; {target!r} is {y.dtype}")

    columns = []
    for name in frame.columns:
        if name == target:
            continue
        series = frame[name]
        is_categorical = name in categorical or not ptypes.is_numeric_dtype(series) or (
            ptypes.is_bool_dtype(series)
        )
        if is_categorical:
            seen = sorted({str(v) for v in series.dropna()})
            if len(seen) > max_categories and name not in categorical:
                log.warning(
                    "leaving out column %r: %d distinct values (over data.max_categories=%d)",
                    name, len(seen), max_categories,
                )
                continue
            columns.append(
                ColumnSpec(
                    name=str(name),
                    kind="categorical",
                    dtype=str(series.dtype),
                    nullable=bool(series.isna().any()),
                    categories=seen[:MAX_RECORDED_CATEGORIES],
                )
            )
        else:
            columns.append(
                ColumnSpec(
                    name=str(name),
                    kind="numeric",
                    dtype=str(series.dtype),
                    nullable=bool(series.isna().any()),
                )
            )
    if not columns:
        raise DataError("data: no feature columns left after selection")
    return FeatureSchema(task=task, target=target, columns=columns, class_labels=class_labels)


def prepare_features(frame: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """The raw feature columns as the ONNX graph will see them.

    Numbers are rounded to float32 (the graph's input type) so the native model trains on exactly
    the values the graph receives; categories become strings, missing ones the empty string.
    """
    out = {}
    for col in schema.columns:
        series = frame[col.name]
        if col.kind == "numeric":
            numbers = pd.to_numeric(series, errors="coerce")
            values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
            out[col.name] = values.astype(np.float32).astype(np.float64)
        else:
            values = series.astype(object).where(series.notna(), MISSING_CATEGORY)
            out[col.name] = np.asarray([str(v) for v in values], dtype=object)
    return pd.DataFrame(out, index=frame.index)


def encode_target(y: pd.Series, schema: FeatureSchema) -> np.ndarray:
    """Class indices (position in ``schema.class_labels``) or float regression targets."""
    if schema.task == "classification":
        index = {label: i for i, label in enumerate(schema.class_labels or [])}
        return np.asarray([index[str(v)] for v in y], dtype=np.int64)
    return y.to_numpy(dtype=np.float64)


@dataclass
class Split:
    X: pd.DataFrame
    y: np.ndarray


@dataclass
class PreparedData:
    """Everything a trial needs, put once in Ray's object store and shared by every trial."""

    schema: FeatureSchema
    train: Split
    valid: Split
    holdout: Split
    digest: str
    source: str
    # The stable holdout (raylane/holdout.py): which holdout rows the challenger is judged on
    # (None: all of them), and the definition recorded with the decision.
    judge_rows: np.ndarray | None = None
    holdout_definition: dict | None = None

    @property
    def judge(self) -> Split:
        """The holdout rows champion and challenger are compared on."""
        if self.judge_rows is None:
            return self.holdout
        return Split(self.holdout.X[self.judge_rows], self.holdout.y[self.judge_rows])


def split_data(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    valid_fraction: float,
    holdout_fraction: float,
    seed: int,
    source: str = "",
    *,
    holdout: np.ndarray | None = None,
) -> PreparedData:
    """Deterministic train / validation / holdout split, stratified for classification.

    ``holdout`` (a boolean mask over ``frame``'s rows, see raylane/holdout.py) names the holdout
    rows instead of a random draw; train and validation are split from the rest.
    """
    keep = frame[schema.target].notna().to_numpy()
    frame = frame[keep]
    X = prepare_features(frame, schema)
    y = encode_target(frame[schema.target], schema)
    stratify = y if schema.task == "classification" else None
    if stratify is not None:
        counts = np.bincount(y)
        if counts[counts > 0].min() < 3:
            stratify = None  # a class too rare to stratify; fall back to a plain shuffle
    if holdout is not None:
        mask = np.asarray(holdout, dtype=bool)[keep]
        X_rest, X_hold, y_rest, y_hold = X[~mask], X[mask], y[~mask], y[mask]
        if stratify is not None:
            counts = np.bincount(y_rest)
            stratify = y_rest if counts[counts > 0].min() >= 3 else None
    else:
        X_rest, X_hold, y_rest, y_hold = train_test_split(
            X, y, test_size=holdout_fraction, random_state=seed, stratify=stratify
        )
    strat_rest = y_rest if stratify is not None else None
    X_train, X_valid, y_train, y_valid = train_test_split(
        X_rest,
        y_rest,
        test_size=valid_fraction / (1.0 - holdout_fraction),
        random_state=seed,
        stratify=strat_rest,
    )
    return PreparedData(
        schema=schema,
        train=Split(X_train, y_train),
        valid=Split(X_valid, y_valid),
        holdout=Split(X_hold, y_hold),
        digest=frame_digest(frame),
        source=source,
    )


def frame_digest(frame: pd.DataFrame) -> str:
    """A short content hash of the table (as MLflow's dataset digest is)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
