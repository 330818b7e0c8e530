"""Read a table, infer its schema, prepare raw columns and split train / validation / holdout."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from sklearn.model_selection import train_test_split

from raylane.locations import LocationError, check_location
from raylane.model.schema import (
    MAX_RECORDED_CATEGORIES,
    MISSING_CATEGORY,
    ColumnSpec,
    FeatureSchema,
    Task,
    category_values,
    numeric_codes,
)

log = logging.getLogger(__name__)
# An integer target with at most this many distinct values is read as class labels.
MAX_INFERRED_CLASSES = 20


class DataError(ValueError):
    """The data does not fit the config; the message names the config key."""


def read_table(path: str, columns: list[str] | None = None, field: str = "data.path"
               ) -> pd.DataFrame:
    """Read CSV or Parquet from a local path or an fsspec URI (s3://, gs://, https://...) the
    operator's allowlist admits (raylane/locations.py); ``field`` names the option in errors."""
    try:
        check_location(field, path)
    except LocationError as exc:
        raise DataError(str(exc)) from None
    is_local = "://" not in path
    if is_local and not Path(path).exists():
        raise DataError(f"{field}: file not found: {path!r}")
    # The suffix of the path the reader opens: not of a query or fragment ("token#.csv").
    suffixes = Path(path if is_local else urlsplit(path).path).suffixes
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            return pd.read_parquet(path, columns=columns)
        if ".csv" in suffixes or ".tsv" in suffixes:
            sep = "\t" if ".tsv" in suffixes else ","
            return pd.read_csv(path, usecols=columns, sep=sep)
    except (OSError, ValueError) as exc:
        raise DataError(f"{field}: cannot read {path!r}: {exc}") from exc
    raise DataError(f"{field}: expected a .csv, .tsv or .parquet file, got {path!r}")


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
            numeric = numeric_codes(str(series.dtype))
            seen = sorted(set(category_values(series.dropna(), numeric)))
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
            out[col.name] = category_values(values, col.numeric_codes)
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
    pos_label: str | None = None  # the positive class of binary metrics (f1); None otherwise
    # The stable holdout (raylane/data/holdout.py): which holdout rows the challenger is judged on
    # (None: all of them), and the definition recorded with the decision.
    judge_rows: np.ndarray | None = None
    holdout_definition: dict | None = None

    @property
    def pos_index(self) -> int | None:
        """``pos_label``'s class index (its position in ``schema.class_labels``)."""
        if self.pos_label is None:
            return None
        return (self.schema.class_labels or []).index(self.pos_label)

    @property
    def judge(self) -> Split:
        """The holdout rows champion and challenger are compared on."""
        if self.judge_rows is None:
            return self.holdout
        return Split(self.holdout.X[self.judge_rows], self.holdout.y[self.judge_rows])


# Quantile bins a regression target is stratified on (fewer for small tables).
REGRESSION_BINS = 10


def min_rows_per_class(valid_fraction: float, holdout_fraction: float) -> int:
    """Rows a class needs so that the stratified split surely puts one in train, validation and
    holdout (sklearn rounds each class's share; the slack of 2 covers that rounding)."""
    rest = valid_fraction / (1.0 - holdout_fraction)  # the validation share of what is left
    need_rest = max(1.0 / rest, 1.0 / (1.0 - rest)) + 2.0
    return max(3, math.ceil(1.0 / holdout_fraction - 1e-9),
               math.ceil(need_rest / (1.0 - holdout_fraction) - 1e-9))


def check_classes(y: np.ndarray, schema: FeatureSchema, valid_fraction: float,
                  holdout_fraction: float) -> None:
    """DataError naming every class too rare to reach all three splits."""
    minimum = min_rows_per_class(valid_fraction, holdout_fraction)
    labels = schema.class_labels or []
    counts = np.bincount(y, minlength=len(labels))
    rare = [f"class {labels[i]!r} has {n} row{'s' if n != 1 else ''}"
            for i, n in enumerate(counts) if n < minimum]
    if rare:
        raise DataError(
            f"data.target: {'; '.join(rare)} in {schema.target!r}; each class needs at least "
            f"{minimum} rows to appear in train, validation and holdout (data.valid_fraction="
            f"{valid_fraction}, data.holdout_fraction={holdout_fraction}). Merge or drop the rare "
            "classes, or add rows"
        )


def _strata(y: np.ndarray, task: Task, test_fraction: float) -> np.ndarray | None:
    """What to stratify on: the class, or the target's quantile bin (equal-sized bins of its
    rank, so ties cannot leave a bin nearly empty). None when the table is too small to bin."""
    if task == "classification":
        return y
    bins = min(REGRESSION_BINS, int(len(y) * test_fraction / 2))
    if bins < 2:
        return None
    ranks = pd.Series(y).rank(method="first").to_numpy()
    return np.asarray(pd.qcut(ranks, bins, labels=False))


def resolve_pos_label(y_train: np.ndarray, schema: FeatureSchema,
                      pos_label: object = None) -> str | None:
    """The positive class of a binary target: ``pos_label`` if given (matched against the class
    labels as written in the data), else the minority class of ``y_train`` (a tie goes to the
    label that sorts last). None for multi-class targets and regression."""
    labels = schema.class_labels or []
    if schema.task != "classification" or len(labels) != 2:
        if pos_label is not None:
            raise DataError(f"data.pos_label: only for binary classification; {schema.target!r} "
                            f"is {schema.task}" + (f" with {len(labels)} classes" if labels
                                                  else ""))
        return None
    if pos_label is None:
        counts = np.bincount(y_train, minlength=2)
        return labels[0] if counts[0] < counts[1] else labels[1]
    match = _match_label(pos_label, labels)
    if match is None:
        raise DataError(f"data.pos_label: {pos_label!r} is not a class of {schema.target!r}; "
                        f"the classes are {', '.join(repr(c) for c in labels)}")
    return match


def _match_label(value: object, labels: list[str]) -> str | None:
    if str(value) in labels:
        return str(value)
    try:  # 1 for a label read as "1.0"
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    for label in labels:
        try:
            if float(label) == number:
                return label
        except ValueError:
            continue
    return None


def split_data(
    frame: pd.DataFrame,
    schema: FeatureSchema,
    valid_fraction: float,
    holdout_fraction: float,
    seed: int,
    source: str = "",
    pos_label: object = None,
    *,
    holdout: np.ndarray | None = None,
) -> PreparedData:
    """Deterministic train / validation / holdout split, stratified on the class (each class
    must reach all three splits, else DataError) or on the regression target's quantiles.

    ``holdout`` (a boolean mask over ``frame``'s rows, see raylane/data/holdout.py) names the
    holdout
    rows instead of a random draw; train and validation are split from the rest.
    """
    keep = frame[schema.target].notna().to_numpy()
    frame = frame[keep]
    X = prepare_features(frame, schema)
    y = encode_target(frame[schema.target], schema)
    if schema.task == "classification":
        check_classes(y, schema, valid_fraction, holdout_fraction)
    if holdout is not None:
        mask = np.asarray(holdout, dtype=bool)[keep]
        X_rest, X_hold, y_rest, y_hold = X[~mask], X[mask], y[~mask], y[mask]
    else:
        X_rest, X_hold, y_rest, y_hold = train_test_split(
            X, y, test_size=holdout_fraction, random_state=seed,
            stratify=_strata(y, schema.task, holdout_fraction),
        )
    rest_fraction = valid_fraction / (1.0 - holdout_fraction)
    X_train, X_valid, y_train, y_valid = train_test_split(
        X_rest, y_rest, test_size=rest_fraction, random_state=seed,
        stratify=_strata(y_rest, schema.task, rest_fraction),
    )
    if schema.task == "classification":
        for name, part in (("train", y_train), ("validation", y_valid), ("holdout", y_hold)):
            missing = sorted(set(range(len(schema.class_labels or []))) - set(np.unique(part)))
            if missing:  # min_rows_per_class should rule this out
                raise DataError(f"data.target: classes "
                                f"{[schema.class_labels[i] for i in missing]} "
                                f"are missing from the {name} split")
    return PreparedData(
        schema=schema,
        train=Split(X_train, y_train),
        valid=Split(X_valid, y_valid),
        holdout=Split(X_hold, y_hold),
        digest=frame_digest(frame),
        source=source,
        pos_label=resolve_pos_label(y_train, schema, pos_label),
    )


def frame_digest(frame: pd.DataFrame) -> str:
    """A short content hash of the table (as MLflow's dataset digest is)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
