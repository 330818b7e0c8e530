"""The FastAPI application, derived from the protocol registry: routes, OpenAPI, JSON errors.

Route endpoints find the replica's :class:`~raylane.serving.dataplane.DataPlane` in the app's
state (:func:`bind`), so the app can be declared at import (as ``@serve.ingress`` needs) and
still serve each replica's model.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

import raylane
from raylane.serving import fastpath
from raylane.serving.dataplane import DataPlane
from raylane.serving.http_io import json_response
from raylane.serving.protocols.base import Protocol, Route, json_body, request_component_schemas

PLANE_KEY = "raylane_plane"


class RaylaneAPI(FastAPI):
    """FastAPI whose OpenAPI schema also holds the hand-parsed request bodies' schemas."""

    def __init__(self, request_models: list[type[BaseModel]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.request_models = request_models

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            spec = get_openapi(title=self.title, version=self.version,
                               description=self.description, routes=self.routes)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(
                request_component_schemas(self.request_models)
            )
            self.openapi_schema = spec
        return self.openapi_schema


def endpoint(route: Route) -> Any:
    """A FastAPI endpoint calling ``route.handler`` with the bound plane and the path params."""
    handler = route.handler

    async def call(request: Request, **params: str) -> Response:
        return await handler(getattr(request.app.state, PLANE_KEY), request, **params)

    request_param = inspect.Parameter(
        "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request
    )
    path_params = [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=str)
                   for p in route.params]
    call.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [request_param, *path_params], return_annotation=Response
    )
    call.__name__ = call.__qualname__ = route.name
    return call


def build_api(protocols: tuple[Protocol, ...]) -> RaylaneAPI:
    """The app: every protocol's routes, their OpenAPI description, JSON errors, the fast path."""
    routes = [route for protocol in protocols for route in protocol.routes]
    bodies = [model for route in routes for model in route.body]
    api = RaylaneAPI(
        request_models=list(dict.fromkeys(bodies)),  # each once, in order
        title="raylane model server",
        version=raylane.__version__,
        description="A registered ONNX model served by Ray Serve: /predict, the Open Inference "
        "Protocol (KServe V2) and the MLflow scoring protocol. Errors are JSON naming the field.",
    )
    # POSTs to the prediction routes skip FastAPI's routing (see fastpath.py)
    api.add_middleware(fastpath.PredictionFastPath)
    for route in routes:
        extra: dict[str, Any] = {}
        if route.response_class is not None:
            extra["response_class"] = route.response_class
        if route.response_model is not None:
            extra["response_model"] = route.response_model
        if route.body:
            extra["openapi_extra"] = json_body(route.body, csv=route.csv)
        api.add_api_route(route.path, endpoint(route), methods=[route.method], name=route.name,
                          summary=route.summary, responses=route.responses, **extra)
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, _http_error)
    return api


def bind(app: Any, plane: DataPlane, protocols: tuple[Protocol, ...]) -> None:
    """Serve ``app``'s routes (FastAPI's and the fast path's) with ``plane``."""
    setattr(app.state, PLANE_KEY, plane)
    fastpath.bind(app, fastpath.FastRouteTable(
        (r for p in protocols for r in p.routes), plane))


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return json_response(
        {"error": f"{where}: {first.get('msg', 'invalid request')}", "field": where,
         "reason": "validation"},
        422,
    )


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = exc.detail if exc.status_code != 404 else f"no route {request.url.path}"
    return json_response({"error": detail, "field": None, "reason": reason}, exc.status_code)
