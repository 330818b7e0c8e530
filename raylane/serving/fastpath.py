"""A short path for the prediction routes: plain ASGI in front of FastAPI's router.

FastAPI still declares, validates the methods of, and documents (OpenAPI) every route. POSTs to
the prediction routes skip its router, dependency solving and endpoint wrapper and go straight
to the same protocol handlers, which build their own responses. Any other request (other routes
or methods, a trailing slash, no replica bound yet) goes through FastAPI. :class:`FastRouteTable`
is compiled from the same protocol routes that FastAPI declares.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from raylane.serving.protocols.base import Route

Handler = Callable[[Request], Awaitable[Response]]
STATE_KEY = "raylane_fast_routes"


class FastRoutes(Protocol):
    def fast_route(self, path: str) -> Handler | None:
        """The handler for a POST to ``path`` (relative to the app's root), or None."""


def route_path(scope: Scope) -> str:
    """``scope["path"]`` relative to ``root_path`` (what Starlette's router matches on)."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root):] if path[len(root)] == "/" else path


class FastRouteTable:
    """The POST routes of the protocols, matched as FastAPI would (``{param}`` = one segment)."""

    def __init__(self, routes: Iterable[Route], plane: Any) -> None:
        """Compile the POST ``routes``; their handlers will be called with ``plane`` first."""
        self.plane = plane
        self.exact: dict[str, Handler] = {}
        self.templates: list[tuple[str, list[str], Callable[..., Awaitable[Response]]]] = []
        for route in routes:
            if route.method != "POST":
                continue
            if "{" not in route.path:
                self.exact[route.path] = partial(route.handler, plane)
            else:
                prefix = route.path[: route.path.index("{")]
                self.templates.append((prefix, route.path.split("/"), route.handler))

    @property
    def paths(self) -> set[str]:
        """The path templates served (for checks against the OpenAPI document)."""
        return set(self.exact) | {"/".join(segments) for _, segments, _ in self.templates}

    def fast_route(self, path: str) -> Handler | None:
        """The handler of a POST to ``path`` (path params bound), or None: FastAPI answers."""
        handler = self.exact.get(path)
        if handler is not None or not self.templates:
            return handler
        parts: list[str] | None = None
        for prefix, segments, fn in self.templates:
            if not path.startswith(prefix):
                continue
            if parts is None:
                parts = path.split("/")
            if len(parts) != len(segments):
                continue
            params = {}
            for segment, part in zip(segments, parts, strict=True):
                if segment[:1] == "{":
                    if not part:
                        break
                    params[segment[1:-1]] = part
                elif segment != part:
                    break
            else:
                return partial(fn, self.plane, **params)
        return None


def bind(app: Any, routes: FastRoutes) -> None:
    """Serve the fast routes of ``app`` (the replica's FastAPI instance) with ``routes``."""
    setattr(app.state, STATE_KEY, routes)


class PredictionFastPath:
    """ASGI middleware: POSTs that ``fast_route`` claims bypass FastAPI's routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            routes: FastRoutes | None = getattr(scope["app"].state, STATE_KEY, None)
            handler = routes.fast_route(route_path(scope)) if routes is not None else None
            if handler is not None:
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
