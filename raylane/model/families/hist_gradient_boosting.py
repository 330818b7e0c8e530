"""scikit-learn's histogram gradient boosting: grown a few iterations at a time with
``warm_start``; skl2onnx converts it, with thresholds rounded down to float32 and a
version-guarded fix for skl2onnx 1.20."""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from raylane.model.families.base import WarmStartFamily
from raylane.model.families.patches import VersionedPatch
from raylane.model.schema import Task


class HistGradientBoosting(WarmStartFamily):
    name = "hist_gradient_boosting"
    estimators = {
        "classification": HistGradientBoostingClassifier,
        "regression": HistGradientBoostingRegressor,
    }
    steps_param = "max_iter"

    def defaults(self, task: Task) -> dict[str, Any]:
        return {"max_iter": 200, "early_stopping": False}

    def for_onnx(self, estimator: BaseEstimator) -> BaseEstimator:
        """A copy of ``estimator`` whose split thresholds are float32 values the ONNX graph
        compares exactly as scikit-learn does.

        scikit-learn tests ``x <= threshold`` in float64; the ONNX tree ensemble tests in float32,
        and skl2onnx rounds each threshold to the *nearest* float32. When that rounds up, an input
        equal to the rounded value goes left in ONNX and right in scikit-learn. Inputs reach the
        model as float32, and for a float32 ``x``, ``x <= t`` exactly when ``x <=`` the largest
        float32 not above ``t``: so round down.
        """
        rounded = copy.deepcopy(estimator)
        for iteration in rounded._predictors:
            for predictor in iteration:
                thresholds = predictor.nodes["num_threshold"]
                thresholds[:] = float32_round_down(thresholds)
        return rounded

    @contextlib.contextmanager
    def onnx_converter(self) -> Iterator[None]:
        with INT_MISSING_FLAGS.applied():
            yield


def float32_round_down(values: np.ndarray) -> np.ndarray:
    """The largest float32 ``<=`` each float64 value (as float64); NaN and infinities stay."""
    with np.errstate(over="ignore"):  # beyond float32's range: inf, then stepped down to max
        nearest = values.astype(np.float32)
    above = nearest.astype(np.float64) > values
    nearest[above] = np.nextafter(nearest[above], np.float32(-np.inf))
    return nearest.astype(np.float64)


@functools.cache
def _missing_flags_rejected() -> bool:
    """Whether converting a HistGradientBoosting model fails on a bool missing-value flag.

    skl2onnx 1.20 passes Python ``False`` for every leaf's ``nodes_missing_value_tracks_true``;
    protobuf >= 6 rejects a bool in an int list ("Expected an int, got a boolean"). Tried on a
    two-leaf model, so it answers for the installed skl2onnx and protobuf together.
    """
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    model = HistGradientBoostingRegressor(max_iter=1, max_depth=2, min_samples_leaf=2)
    model.fit(X, X[:, 0])
    try:
        convert_sklearn(model, initial_types=[("x", FloatTensorType([None, 2]))],
                        target_opset={"": 17, "ai.onnx.ml": 3})
    except (TypeError, ValueError) as exc:
        cause: BaseException | None = exc
        while cause is not None:
            if "got a boolean" in str(cause):
                return True
            cause = cause.__cause__ or cause.__context__
        raise
    return False


def _coerce_missing_flags_to_int() -> Callable[[], None]:
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(
            *args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs
        )

    tree_ensemble.add_node = add_node

    def undo() -> None:
        tree_ensemble.add_node = original

    return undo


INT_MISSING_FLAGS = VersionedPatch(
    name="skl2onnx HistGradientBoosting int missing-value flags",
    package="skl2onnx",
    written_for=frozenset({"1.20.0"}),
    needed=_missing_flags_rejected,
    install=_coerce_missing_flags_to_int,
)
