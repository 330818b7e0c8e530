"""The model holder's swap policy with real ONNX sessions and a registry stand-in.

``fetch``/``resolve`` stand in for the MLflow registry; opening the session and the warm-up are
the real ones, so a corrupt graph or a model that contradicts its schema fails as in production.
"""

from __future__ import annotations

import pytest
from tiny_serving_model import SCHEMA, registered, tiny_onnx

from raylane.model_store import RegisteredModel
from raylane.serving.predictor import ModelHolder

URI = "models:/credit@champion"


class Registry:
    """Versions by number; ``alias`` is the version the URI points at now."""

    def __init__(self) -> None:
        self.versions: dict[str, RegisteredModel] = {}
        self.alias = "1"
        self.fetched: list[str] = []

    def fetch(self, uri: str, tracking_uri: str | None) -> RegisteredModel:
        self.fetched.append(self.alias)
        return self.versions[self.alias]

    def resolve(self, uri: str, tracking_uri: str | None) -> str:
        return self.alias


@pytest.fixture(scope="module")
def good() -> bytes:
    return tiny_onnx()


@pytest.fixture()
def setup(good):
    reg = Registry()
    reg.versions["1"] = registered("1", good)
    reg.versions["2"] = registered("2", b"\x08\x07 not an onnx graph")
    # loads, but its schema promises three classes: the warm-up's output check refuses it
    three = SCHEMA.model_copy(update={"class_labels": ["a", "b", "c"]})
    reg.versions["3"] = RegisteredModel(name="credit", version="3", alias="champion",
                                        run_id="r", onnx_bytes=good, schema=three, metadata={})
    reg.versions["4"] = registered("4", good)
    loads: list[tuple[str, str, str]] = []
    holder = ModelHolder(on_load=lambda *a: loads.append(a), fetch=reg.fetch,
                         resolve=reg.resolve)
    return reg, holder, loads


def test_first_load_then_no_reload_while_the_alias_stays(setup):
    reg, holder, loads = setup
    assert holder.ensure(URI, None) is True
    assert holder.current.version == "1" and holder.last_error is None
    assert holder.ensure(URI, None) is False  # same version: nothing downloaded
    assert reg.fetched == ["1"] and loads == [("credit", "1", "loaded")]


@pytest.mark.parametrize("bad,error", [("2", "DecodeError: .*corrupt"),
                                       ("3", "WarmupError: warm-up: expected finite probab")])
def test_a_failed_swap_keeps_the_old_model_and_reports_the_error(setup, bad, error):
    import re

    reg, holder, loads = setup
    holder.ensure(URI, None)
    serving = holder.current
    reg.alias = bad
    assert holder.ensure(URI, None) is False
    assert holder.current is serving  # untouched: requests keep the old model
    err = holder.last_error
    assert err["version"] == bad and err["kept_version"] == "1" and err["model_uri"] == URI
    assert re.search(error, err["error"]), err["error"]
    assert loads[-1] == ("credit", bad, "failed")
    assert holder.ensure(URI, None) is False and reg.fetched == ["1", bad]  # not retried

    reg.alias = "4"  # a good version later: swapped in, the error cleared
    assert holder.ensure(URI, None) is True
    assert holder.current.version == "4" and holder.last_error is None
    assert loads[-1] == ("credit", "4", "swapped")


def test_a_failed_first_load_raises_and_serves_nothing(setup):
    reg, holder, loads = setup
    reg.alias = "3"
    with pytest.raises(Exception, match="warm-up"):
        holder.ensure(URI, None)
    assert holder.current is None
    assert holder.last_error["version"] is None and holder.last_error["kept_version"] is None
    assert loads == [(URI, "unknown", "failed")]
    reg.alias = "1"  # the replica's next reconfigure succeeds
    assert holder.ensure(URI, None) is True and holder.current.version == "1"
