"""Schemathesis over the served OpenAPI document: no request to any route of any protocol (native
``/predict``, the Open Inference Protocol, MLflow scoring) is answered with a server error.

In-process: the real app over a real tiny ONNX model. Requests name the served model (else nearly
all would stop at the 404 for an unknown model), so the fuzzed bodies reach the parsers; the
metadata routes are also called with the fuzzed names. About 260 cases.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from tiny_serving_model import loaded

from raylane.serving.api import bind, build_api
from raylane.serving.protocols import PROTOCOLS

from .inprocess import make_plane


def served_schema():
    api = build_api(PROTOCOLS)
    bind(api, make_plane(loaded("1"), {"limits": {"max_rows": 50}}), PROTOCOLS)
    return schemathesis.openapi.from_asgi("/openapi.json", api)


# built at import: schemathesis.pytest.from_fixture does not run under pytest 9
schema = served_schema()


FUZZ = {"deadline": None, "derandomize": True, "database": None,
        "phases": [Phase.explicit, Phase.generate], "suppress_health_check": list(HealthCheck)}


def call(case) -> None:
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = "credit"
        if "version" in case.path_parameters:
            case.path_parameters["version"] = "1"
    case.call_and_validate(checks=[not_a_server_error])


# the prediction routes (valid and invalid bodies: schemathesis generates both) ...
@schema.include(method="POST").parametrize()
@settings(max_examples=50, **FUZZ)
def test_no_prediction_request_is_a_server_error(case):
    call(case)


# ... and the others, with fuzzed model names and versions too
@schema.exclude(method="POST").parametrize()
@settings(max_examples=10, **FUZZ)
def test_no_other_request_is_a_server_error(case):
    if case.path_parameters and "name" in case.path_parameters:
        case.call_and_validate(checks=[not_a_server_error])  # mostly unknown models: 404
    call(case)
