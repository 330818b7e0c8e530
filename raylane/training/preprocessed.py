"""The training and validation splits through the shared preprocessing, fitted once per job.

Every trial of a search fits the same preprocessing (impute, one-hot, scale for some families) on
the same training rows, so the job fits it once per preprocessing variant (a family's
``scale_numeric``) and hands the trials the transformed arrays: put once in Ray's object store,
they reach each trial without a copy (numpy buffers are read in place). The fitted preprocessor
stays with them so the refit best model forms the exported pipeline (raw columns in) with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from sklearn.compose import ColumnTransformer

from raylane.data.read import PreparedData
from raylane.model.families import Family
from raylane.model.preprocessing import build_preprocessor

__all__ = ["PreprocessedSplits", "preprocess"]


@dataclass(frozen=True)
class PreprocessedSplits:
    """The splits a model is fitted and scored on, as dense float32 arrays."""

    preprocessor: ColumnTransformer  # fitted on the training split
    scale_numeric: bool  # the variant: numeric columns standardised (linear models)
    task: str  # classification or regression
    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    pos_index: int | None  # the positive class's index, for binary metrics such as f1
    seconds: float  # time spent fitting the preprocessing and transforming both splits

    def fits(self, family: Family) -> bool:
        """Whether ``family`` trains on this variant of the preprocessing."""
        return self.scale_numeric == family.scale_numeric


def preprocess(data: PreparedData, family: Family) -> PreprocessedSplits:
    """Fit ``family``'s variant of the shared preprocessing on the training split and transform
    the training and validation splits with it."""
    started = time.perf_counter()
    preprocessor = build_preprocessor(data.schema, family.scale_numeric)
    X_train = preprocessor.fit_transform(data.train.X).astype(np.float32)
    X_valid = preprocessor.transform(data.valid.X).astype(np.float32)
    return PreprocessedSplits(
        preprocessor=preprocessor, scale_numeric=family.scale_numeric, task=data.schema.task,
        X_train=X_train, y_train=np.asarray(data.train.y),
        X_valid=X_valid, y_valid=np.asarray(data.valid.y),
        pos_index=data.pos_index, seconds=time.perf_counter() - started,
    )
