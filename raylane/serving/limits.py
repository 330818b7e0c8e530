"""A request body's limits, checked before it is parsed, and its JSON decoding.

Every client mistake is a :class:`~raylane.model.feeds.RequestError` naming the field and what was
expected; the routes render it in their protocol's error shape.
"""

from __future__ import annotations

import json
from typing import Any

from raylane.model.feeds import RequestError

try:  # orjson is optional; it is several times faster than json for request bodies
    import orjson

    _loads = orjson.loads
    _JSONDecodeError: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - exercised only without orjson
    orjson = None
    _loads = json.loads
    _JSONDecodeError = (ValueError,)


def decode_json(body: bytes) -> Any:
    """Parse a JSON body; NaN/Infinity literals parse (and are rejected later, per column)."""
    if not body:
        raise RequestError("empty body: expected a JSON object", field="body", reason="empty_body")
    try:
        return _loads(body)
    except _JSONDecodeError:
        pass
    try:  # the stdlib accepts NaN/Infinity, which Python clients send; reject them by column later
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(
            f"malformed JSON: {exc}", field="body", reason="malformed_json"
        ) from None
    except RecursionError:
        raise RequestError(
            "malformed JSON: arrays or objects nested too deeply", field="body",
            reason="malformed_json",
        ) from None


def check_rows(n: int, max_rows: int, field: str) -> None:
    if n == 0:
        raise RequestError(
            f"{field}: empty batch; expected at least one row", field=field, reason="empty_batch"
        )
    if n > max_rows:
        raise RequestError(
            f"{field}: {n} rows is over the limit of {max_rows} rows per request; split the batch",
            field=field,
            reason="too_many_rows",
        )


def check_json_size(body: bytes, max_rows: int, width: int) -> None:
    """Refuse, before parsing, a JSON body with more objects, arrays or values than a request of
    ``max_rows`` rows of ``width`` columns can hold in any protocol's layout.

    Parsed, every ``{}`` costs ~60 bytes and every value a pointer at least (2 MB of ``[{},...]``
    is 50 MB of Python objects); counting bytes is C-speed. Brackets and commas inside strings
    count too, so the bounds leave room for several per value.
    """
    cells = (max_rows + 4) * (width + 1)
    if len(body) <= 2 * cells + 256:
        return  # too short to hold more brackets or commas than the bounds: nothing to count
    containers = body.count(b"{") + body.count(b"[")
    if containers > 2 * cells + 256:
        raise RequestError(
            f"body: {containers} JSON objects and arrays is more than a request of at most "
            f"{max_rows} rows of {width} columns holds; send fewer rows per request",
            field="body", reason="too_many_rows",
        )
    values = body.count(b",")
    if values > 4 * cells + 256:
        raise RequestError(
            f"body: {values} JSON values is more than a request of at most {max_rows} rows of "
            f"{width} columns holds; send fewer rows per request",
            field="body", reason="too_many_rows",
        )
