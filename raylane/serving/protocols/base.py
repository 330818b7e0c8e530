"""What a protocol module provides, and the request pipeline its prediction routes share.

A protocol is one module exposing ``PROTOCOL``: its routes (path, handler, OpenAPI description),
the pydantic models of its request bodies (documented in OpenAPI, never run per request: the
handlers parse by hand) and its error body. Handlers are ``async (plane, request, **path_params)
-> Response``; POST routes are prediction routes and are served by the ASGI fast path.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from raylane.model.onnx_model import Prediction
from raylane.model.schema import FeatureSchema
from raylane.serving.columns import Feeds, RequestError, decode_json
from raylane.serving.dataplane import DataPlane, not_ready
from raylane.serving.http_io import json_response, read_body
from raylane.serving.prediction_ids import new_prediction_ids
from raylane.serving.predictor import LoadedModel

log = logging.getLogger("ray.serve")

Handler = Callable[..., Awaitable[Response]]
Parse = Callable[[Any, FeatureSchema, int], tuple[Feeds, int]]
ParseBytes = Callable[[bytes, FeatureSchema, int], tuple[Feeds, int]]
# (model, prediction, rows, decoded JSON body or None, prediction ids) -> response body
Respond = Callable[[LoadedModel, Prediction, int, Any, list[str]], dict]
ErrorBody = Callable[[RequestError], dict]


class ErrorResponse(BaseModel):
    """A client error (4xx), a model failure (500) or an unavailable model (503)."""

    error: str = Field(description="What was wrong and what was expected.")
    field: str | None = Field(None, description="The field or column at fault.")
    reason: str = Field(description="Machine-readable reason, e.g. missing_column, too_many_rows.")


ERRORS = {c: {"model": ErrorResponse} for c in (400, 404, 413, 415, 500, 503)}


def model_failure(exc: Exception) -> RequestError:
    """The 500 answered when the model fails on a request that passed validation (the details
    are in the replica's log, not in the reply)."""
    return RequestError(
        f"the model failed to score this request ({type(exc).__name__}); this is a server "
        "error, not a fault of the request", status=500, reason="model_failure",
    )


def error_body(err: RequestError) -> dict:
    """The error body of ``/predict``, the V2 protocol and the routes FastAPI answers."""
    return {"error": err.message, "field": err.field, "reason": err.reason}


@dataclass(frozen=True)
class Route:
    """One HTTP route of a protocol, and how OpenAPI describes it."""

    method: str  # "GET" or "POST" (POST routes are prediction routes: the fast path serves them)
    path: str  # a FastAPI path template, e.g. "/v2/models/{name}/infer"
    handler: Handler
    name: str  # the endpoint's name (OpenAPI derives operationId and summary from it)
    response_model: Any = None
    response_class: type[Response] | None = None
    responses: dict | None = None
    summary: str | None = None
    body: tuple[type[BaseModel], ...] = ()  # the documented JSON request bodies (one of)
    csv: bool = False  # the body may also be text/csv

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.path))


@dataclass(frozen=True)
class Protocol:
    """A protocol's routes; its request models are the routes' documented bodies."""

    name: str
    routes: tuple[Route, ...]


async def answer(
    plane: DataPlane, request: Request, route: str, parse: Parse, respond: Respond,
    errors: ErrorBody = error_body, parse_bytes: ParseBytes | None = None,
) -> Response:
    """Read, decode and validate the body, predict, and answer (or the protocol's error body).

    ``parse_bytes`` (for ``text/csv`` bodies) also allows that content type.
    """
    started = time.perf_counter()
    model = plane.holder.current
    try:
        if model is None:
            raise not_ready()
        limits = plane.settings.limits
        body, is_csv = await read_body(request, limits.max_body_bytes, parse_bytes is not None)
        if is_csv:
            obj = None
            feeds, n = parse_bytes(body, model.schema, limits.max_rows)  # type: ignore[misc]
        else:
            obj = decode_json(body)
            feeds, n = parse(obj, model.schema, limits.max_rows)
        pred = await plane.infer(model, feeds, n)
        ids = new_prediction_ids(n)  # returned to the client and logged with the rows
        out = respond(model, pred, n, obj, ids)
    except RequestError as err:
        plane.telemetry.rejected_request(err.reason, route)
        return json_response(errors(err), err.status)
    except ClientDisconnect:  # gone while sending its body: nobody to answer, no server fault
        plane.telemetry.rejected_request("client_disconnected", route)
        return Response(status_code=499)
    except Exception as exc:  # the request was valid: a fault of the model or the server
        log.exception("raylane: %s: the model failed on a validated request", route)
        plane.telemetry.server_error("model_failure", route)
        err = model_failure(exc)
        return json_response(errors(err), err.status)
    response = json_response(out)
    plane.answered(model, route, feeds, n, pred, started, ids)
    return response


def require_object(obj: Any, what: str) -> dict:
    """``obj`` if it is a JSON object, else a 400 naming what was expected."""
    if not isinstance(obj, dict):
        raise RequestError(
            f"body: expected a JSON object with {what}, got {type(obj).__name__}",
            field="body",
            reason="wrong_type",
        )
    return obj


def request_component_schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    """JSON schemas of the request bodies, referenced as ``#/components/schemas/<Model>``."""
    _, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    return top.get("$defs", {})


def json_body(models: tuple[type[BaseModel], ...], csv: bool = False) -> dict:
    """``openapi_extra`` describing a JSON request body (one of ``models``)."""
    refs = [{"$ref": f"#/components/schemas/{m.__name__}"} for m in models]
    content: dict[str, Any] = {
        "application/json": {"schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}
    }
    if csv:
        content["text/csv"] = {"schema": {"type": "string", "description": "header row + rows"}}
    return {"requestBody": {"required": True, "content": content}}
