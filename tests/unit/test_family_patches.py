"""Third-party patches: applied around the conversion that needs them, only to the versions they
were written for, and never left behind."""

from __future__ import annotations

import importlib.metadata
import logging

import pytest
from skl2onnx.common import tree_ensemble

from raylane.model.families import hist_gradient_boosting as hgb
from raylane.model.families.patches import UnverifiedPatchError, VersionedPatch

SKL2ONNX = importlib.metadata.version("skl2onnx")
ORIGINAL_ADD_NODE = tree_ensemble.add_node


class Recorder:
    """An ``install`` that records what happened to it."""

    def __init__(self):
        self.events: list[str] = []

    def __call__(self):
        self.events.append("installed")
        return lambda: self.events.append("undone")


def patch(needed: bool, written_for: str, install: Recorder) -> VersionedPatch:
    return VersionedPatch(name="test fix", package="skl2onnx", written_for=frozenset({written_for}),
                          needed=lambda: needed, install=install)


def test_applied_when_needed_and_written_for_this_version_then_undone():
    install = Recorder()
    with patch(True, SKL2ONNX, install).applied() as applied:
        assert applied and install.events == ["installed"]
    assert install.events == ["installed", "undone"]
    with pytest.raises(RuntimeError, match="boom"), patch(True, SKL2ONNX, install).applied():
        raise RuntimeError("boom")
    assert install.events[-1] == "undone"


def test_refused_when_needed_but_written_for_another_version():
    install = Recorder()
    refused = pytest.raises(UnverifiedPatchError,
                            match=rf"skl2onnx {SKL2ONNX} has the defect.*0\.0\.1")
    with refused, patch(True, "0.0.1", install).applied():
        pass
    assert install.events == []


@pytest.mark.parametrize("known", [True, False])
def test_skipped_with_a_log_line_when_not_needed(caplog, known):
    install = Recorder()
    caplog.set_level(logging.INFO, logger="raylane.model.families.patches")
    with patch(False, SKL2ONNX if known else "0.0.1", install).applied() as applied:
        assert not applied
    assert install.events == []
    [record] = caplog.records
    assert record.levelno == (logging.INFO if known else logging.WARNING)
    assert f"not needed with skl2onnx {SKL2ONNX}" in record.getMessage()


def test_hgb_fix_is_in_place_only_during_conversion():
    assert tree_ensemble.add_node is ORIGINAL_ADD_NODE  # importing raylane patches nothing
    needed = hgb.INT_MISSING_FLAGS.needed()
    with hgb.HistGradientBoosting().onnx_converter():
        assert (tree_ensemble.add_node is not ORIGINAL_ADD_NODE) == needed
    assert tree_ensemble.add_node is ORIGINAL_ADD_NODE


def test_hgb_fix_fixes_the_defect_it_is_written_for():
    """The probe converts a tiny HistGradientBoosting model; with the fix installed it converts
    whatever the installed versions are."""
    undo = hgb.INT_MISSING_FLAGS.install()
    try:
        assert hgb._missing_flags_rejected.__wrapped__() is False
    finally:
        undo()
    assert tree_ensemble.add_node is ORIGINAL_ADD_NODE
    protobuf = int(importlib.metadata.version("protobuf").split(".")[0])
    if SKL2ONNX == "1.20.0" and protobuf >= 6:  # the pair the fix was written for
        assert hgb.INT_MISSING_FLAGS.needed()
