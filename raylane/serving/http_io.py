"""HTTP plumbing shared by the protocols: JSON responses and reading a body within its limits."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from raylane.model.feeds import RequestError
from raylane.serving.limits import orjson

# As MLflow's scoring server: JSON or CSV only. A missing type, text/plain or a form encoding is a
# 415, so a web page cannot post a prediction from a browser without a CORS preflight.
JSON_TYPE = "application/json"


def dumps(obj: Any) -> bytes:
    """JSON bytes; numpy arrays are serialized as lists. Never raises: what JSON cannot hold as
    it is (a lone surrogate a client sent, an int over 64 bits) is encoded by :func:`safe_dumps`.
    """
    try:
        if orjson is not None:
            return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        return json.dumps(obj, default=lambda a: a.tolist(), allow_nan=False).encode()
    except (TypeError, ValueError):
        return safe_dumps(obj)


def safe_dumps(obj: Any) -> bytes:
    """Strict JSON of anything: lone surrogates escaped as text (``"\\ud800"``), NaN and
    infinities as null, numpy values as lists and numbers, other objects as their ``str``."""
    return json.dumps(_safe(obj), ensure_ascii=False, allow_nan=False).encode()


def _safe(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(obj, bool) or obj is None or isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {_key(k): _safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_safe(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)):
        return _safe(obj.tolist())
    return _safe(str(obj))


def _key(key: Any) -> str:
    return _safe(key if isinstance(key, str) else str(key))


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
    if not is_csv and media != JSON_TYPE and not (media.startswith("application/")
                                                   and media.endswith("+json")):
        expected = "application/json or text/csv" if csv_ok else "application/json"
        what = f"content type {media!r}" if media else "a body without a content type"
        raise RequestError(
            f"{what} is not supported; expected {expected}",
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
