"""scikit-learn's histogram gradient boosting: grown a few iterations at a time with
``warm_start``; skl2onnx converts it, with a version-guarded fix for skl2onnx 1.20."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from raylane.families.base import WarmStartFamily
from raylane.families.patches import VersionedPatch
from raylane.schema import Task


class HistGradientBoosting(WarmStartFamily):
    name = "hist_gradient_boosting"
    estimators = {
        "classification": HistGradientBoostingClassifier,
        "regression": HistGradientBoostingRegressor,
    }
    steps_param = "max_iter"

    def defaults(self, task: Task) -> dict[str, Any]:
        return {"max_iter": 200, "early_stopping": False}

    @contextlib.contextmanager
    def onnx_converter(self) -> Iterator[None]:
        with INT_MISSING_FLAGS.applied():
            yield


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
