"""Schemathesis over the served OpenAPI document: no request to any route of any protocol (native
``/predict``, the Open Inference Protocol, MLflow scoring) is answered with a server error.

In-process: the real app over a real tiny ONNX model. Requests name the served model (else nearly
all would stop at the 404 for an unknown model), so the fuzzed bodies reach the parsers; the
metadata routes are also called with the fuzzed names. Up to 320 requests (16 operations).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from tiny_serving_model import loaded

from raylane.serving.api import bind, build_api
from raylane.serving.protocols import PROTOCOLS

from .inprocess import make_plane


def served_schema():
    api = build_api(PROTOCOLS)
    bind(api, make_plane(loaded("1"), {"limits": {"max_rows": 50}}), PROTOCOLS)
    return schemathesis.openapi.from_asgi("/openapi.json", api)


schema = served_schema()
FUZZ = {"deadline": None, "derandomize": True, "database": None,
        "phases": [Phase.generate], "suppress_health_check": list(HealthCheck)}


def operations(filtered) -> list:
    """The schema's operations, one pytest parameter each, named by their label (schemathesis's
    own ``parametrize()`` gives every case the same node id, which pytest-xdist runs once)."""
    ops = [result.ok() for result in filtered.get_all_operations()]
    return [pytest.param(op, id=op.label) for op in ops]


def cases(operation) -> st.SearchStrategy:
    """Valid and invalid requests to ``operation``, as schemathesis's own runner draws them."""
    return st.one_of([operation.as_strategy(generation_mode=mode) for mode in GenerationMode])


def call(case) -> None:
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = "credit"
        if "version" in case.path_parameters:
            case.path_parameters["version"] = "1"
    case.call_and_validate(checks=[not_a_server_error])


# the prediction routes (valid and invalid bodies: schemathesis generates both) ...
@pytest.mark.parametrize("operation", operations(schema.include(method="POST")))
def test_no_prediction_request_is_a_server_error(operation):
    @given(case=cases(operation))
    @settings(max_examples=50, **FUZZ)
    def fuzz(case):
        call(case)

    fuzz()


# ... and the others, with fuzzed model names and versions too
@pytest.mark.parametrize("operation", operations(schema.exclude(method="POST")))
def test_no_other_request_is_a_server_error(operation):
    @given(case=cases(operation))
    @settings(max_examples=10, **FUZZ)
    def fuzz(case):
        if case.path_parameters and "name" in case.path_parameters:
            case.call_and_validate(checks=[not_a_server_error])  # mostly unknown models: 404
        call(case)

    fuzz()
