"""The protocol registry is the one source of the FastAPI routes, OpenAPI and the fast path."""

from __future__ import annotations

from functools import partial

from starlette.responses import Response

from raylane.serving import fastpath
from raylane.serving.api import build_api
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.protocols.base import Protocol, Route

PLANE = object()  # the table only passes it on to the handlers


def _table(protocols=PROTOCOLS) -> fastpath.FastRouteTable:
    return fastpath.FastRouteTable((r for p in protocols for r in p.routes), PLANE)


def test_fast_path_routes_are_the_openapi_post_paths():
    spec = build_api(PROTOCOLS).openapi()
    posts = {path for path, ops in spec["paths"].items() if "post" in ops}
    assert _table().paths == posts == {
        "/predict", "/invocations", "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    }


def test_openapi_documents_exactly_the_registered_routes_and_their_bodies():
    spec = build_api(PROTOCOLS).openapi()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    registered = {(r.path, r.method) for p in PROTOCOLS for r in p.routes}
    assert documented == registered and len(registered) == sum(len(p.routes) for p in PROTOCOLS)
    bodies = {m.__name__ for p in PROTOCOLS for r in p.routes for m in r.body}
    assert bodies and bodies <= set(spec["components"]["schemas"])
    names = [r.name for p in PROTOCOLS for r in p.routes]
    assert len(names) == len(set(names))  # unique operation names


def test_fast_route_matches_as_fastapi_does():
    table = _table()
    predict = table.fast_route("/predict")
    assert isinstance(predict, partial) and predict.args == (PLANE,) and not predict.keywords
    infer = table.fast_route("/v2/models/credit/infer")
    assert infer.keywords == {"name": "credit"} and infer.args == (PLANE,)
    assert table.fast_route("/v2/models/credit/versions/7/infer").keywords == {
        "name": "credit", "version": "7"}
    assert table.fast_route("/v2/models/versions/infer").keywords == {"name": "versions"}
    for path in ("/predict/", "/healthz", "/v2/models//infer", "/v2/models/a/b/c/infer",
                 "/v2/models/a/versions//infer", "/v2/models/credit", "", "/invocations/x"):
        assert table.fast_route(path) is None, path


def test_a_new_protocol_is_one_registry_entry_away_from_openapi_and_the_fast_path():
    async def echo(plane, request, key: str) -> Response:
        return Response(key)

    extra = Protocol(name="echo", routes=(Route("POST", "/echo/{key}", echo, "echo"),))
    spec = build_api((*PROTOCOLS, extra)).openapi()
    assert "post" in spec["paths"]["/echo/{key}"]
    assert [p["name"] for p in spec["paths"]["/echo/{key}"]["post"]["parameters"]] == ["key"]
    table = _table((*PROTOCOLS, extra))
    assert "/echo/{key}" in table.paths
    assert table.fast_route("/echo/abc").keywords == {"key": "abc"}
