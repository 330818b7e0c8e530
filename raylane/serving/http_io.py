"""HTTP plumbing shared by the protocols: JSON responses and reading a body within its limits."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from raylane.serving.columns import RequestError, orjson

JSON_TYPES = {"", "application/json", "text/json", "application/x-www-form-urlencoded"}


def dumps(obj: Any) -> bytes:
    """JSON bytes; numpy arrays are serialized as lists."""
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, default=lambda a: a.tolist()).encode()  # pragma: no cover


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def body_too_large(limit: int) -> RequestError:
    return RequestError(
        f"body is over the limit of {limit} bytes; send fewer rows per request",
        status=413, field="body", reason="body_too_large",
    )


async def read_body(request: Request, limit: int, csv_ok: bool = False) -> tuple[bytes, bool]:
    """The body within ``limit`` bytes; (body, is_csv). Raises 413/415 RequestErrors."""
    media = media_type(request)
    is_csv = csv_ok and media == "text/csv"
    if not is_csv and media not in JSON_TYPES and not media.endswith("+json"):
        expected = "application/json or text/csv" if csv_ok else "application/json"
        raise RequestError(
            f"content type {media!r} is not supported; expected {expected}",
            status=415, field="Content-Type", reason="unsupported_media_type",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise body_too_large(limit)
        return await request.body(), is_csv
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks), is_csv
