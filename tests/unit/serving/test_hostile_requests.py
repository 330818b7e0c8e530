"""Bodies crafted to stall a replica are refused cheaply: a 4xx with a JSON body in well under
100 ms of CPU (parsing runs on the replica's event loop, so a slow refusal stalls its health
checks too). The real app, called in-process as the replica's HTTP server calls it."""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc

import pytest
from tiny_serving_model import loaded

from raylane.serving.api import bind, build_api
from raylane.serving.protocols import PROTOCOLS

from .inprocess import make_plane

CPU_BUDGET_S = 0.1  # generous: each refusal below costs a few milliseconds on a 2-core machine
NAMES = [f"c{i}" for i in range(40_000)]  # 0.35 MB of column names, all distinct
TWO_MB = 2 * 2**20


def dumps(obj) -> bytes:
    return json.dumps(obj).encode()


def v2(**tensor) -> bytes:
    return dumps({"inputs": [{"name": "age", "datatype": "FP32", "shape": [1], "data": [1],
                              **tensor}]})


def deeply_nested(depth: int) -> bytes:
    return b'{"records": ' + b"[" * depth + b"]" * depth + b"}"


CRAFTED = {
    # duplicate or surplus column names: counted with list.count per name, 18 s for these
    "predict columns": ("/predict", dumps({"columns": NAMES, "data": [[0] * len(NAMES)]})),
    "predict duplicate columns": ("/predict", dumps({"columns": ["age"] * 40_000, "data": []})),
    "invocations dataframe_split": (
        "/invocations", dumps({"dataframe_split": {"columns": NAMES, "data": [[0] * 40_000]}})),
    "csv header": ("/invocations", (",".join(NAMES) + "\n" + "0," * 39_999 + "0\n").encode(),
                   "text/csv"),
    "invocations columnar": ("/invocations", dumps({"inputs": {n: [0] for n in NAMES}})),
    "predict record keys": ("/predict", dumps({"records": [dict.fromkeys(NAMES, 0)]})),
    # a shape of many huge dimensions: math.prod over 20,000 of them, twice, took 2.3 s
    "v2 shape dimensions": ("/v2/models/credit/infer", v2(shape=[2**64 - 1] * 20_000)),
    "v2 shape size": ("/v2/models/credit/infer", v2(shape=[2**64 - 1, 2**64 - 1])),
    "v2 inputs": ("/v2/models/credit/infer",
                  dumps({"inputs": [{"name": n, "datatype": "FP32", "shape": [1], "data": [0]}
                                    for n in NAMES[:10_000]]})),
    # many small values: 2 MB of [{}, ...] is 50 MB of Python objects once parsed
    "predict records of empty objects": (
        "/predict", b'{"records": [' + b"{}," * (TWO_MB // 3) + b"{}]}"),
    "invocations records of empty objects": (
        "/invocations", b'{"dataframe_records": [' + b"{}," * (TWO_MB // 3) + b"{}]}"),
    "predict rows of empty lists": (
        "/predict", b'{"columns": [], "data": [' + b"[]," * (TWO_MB // 3) + b"[]]}"),
    "v2 data of zeros": ("/v2/models/credit/infer",
                         v2(shape=[1], data=[0] * (TWO_MB // 2))),
    "deep nesting": ("/predict", deeply_nested(5_000)),
    "deeper nesting": ("/predict", deeply_nested(200_000)),
    # a CSV of many rows: read whole, 2 MB cost 190 MB; now read until the first row too many
    "csv rows": ("/invocations", b"age,income,home\n" + b"1,2,own\n" * (TWO_MB // 8), "text/csv"),
    "csv blank lines": ("/invocations", b"age,income,home\n" + b"\n" * TWO_MB, "text/csv"),
    # what a web page can send without a CORS preflight
    "no content type": ("/predict", b"{}" + b" " * TWO_MB, None),
    "form encoded": ("/invocations", b"a=1" * (TWO_MB // 3), "application/x-www-form-urlencoded"),
    "text/plain": ("/v2/models/credit/infer", v2(), "text/plain"),
}


@pytest.fixture(scope="module")
def app():
    api = build_api(PROTOCOLS)
    bind(api, make_plane(loaded("1")), PROTOCOLS)  # the default limits: 10,000 rows, 16 MiB
    return api


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def call(app, loop, path: str, body: bytes, content_type: str | None):
    """One request through the ASGI app: (status, JSON body, CPU seconds it cost)."""
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    sent: list[dict] = []
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return pending.pop() if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    started = time.process_time()
    loop.run_until_complete(app(scope, receive, send))
    cpu = time.process_time() - started
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload), cpu


@pytest.mark.parametrize("name", list(CRAFTED))
def test_a_crafted_body_is_a_cheap_4xx(app, loop, name):
    path, body, *ctype = CRAFTED[name]
    content_type = ctype[0] if ctype else "application/json"
    call(app, loop, "/predict", b"{}", "application/json")  # the app's middleware is built once
    cpu = []
    for _ in range(2):  # the lesser of two: a scheduler hiccup is not the handler's cost
        status, out, seconds = call(app, loop, path, body, content_type)
        assert 400 <= status < 500, (status, out)
        assert out.get("error") or out.get("message"), out
        cpu.append(seconds)
    assert min(cpu) < CPU_BUDGET_S, f"{name}: {min(cpu) * 1000:.0f} ms of CPU for a {status}"


def test_the_refusals_say_what_was_wrong(app, loop):
    expect = {
        "predict columns": (400, "too_many_columns", "40000 names, but the model has 3"),
        "predict duplicate columns": (400, "too_many_columns", "40000 names"),
        "csv header": (400, "too_many_columns", "csv.columns: 40000 names"),
        "v2 shape size": (400, "too_many_rows", "over the limit of 10000 rows"),
        "predict records of empty objects": (400, "too_many_rows", "JSON objects and arrays"),
        "v2 data of zeros": (400, "too_many_rows", "JSON values"),
        "csv rows": (400, "too_many_rows", "more than 10000 rows"),
        "no content type": (415, "unsupported_media_type", "without a content type"),
        "form encoded": (415, "unsupported_media_type", "application/x-www-form-urlencoded"),
    }
    for name, (status, reason, fragment) in expect.items():
        path, body, *ctype = CRAFTED[name]
        got, out, _ = call(app, loop, path, body, ctype[0] if ctype else "application/json")
        message = out.get("error") or out.get("message")
        assert (got, out["reason"]) == (status, reason), (name, out)
        assert fragment in message, (name, message)


def test_duplicate_columns_are_named(app, loop):
    body = dumps({"columns": ["age", "home", "age"], "data": [[1, "own", 2]]})
    status, out, _ = call(app, loop, "/predict", body, "application/json")
    assert (status, out["reason"], out["field"]) == (400, "duplicate_column", "columns")
    assert out["error"] == "columns: duplicate column(s) ['age']"


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/vnd.api+json"])
def test_json_content_types_are_accepted(app, loop, content_type):
    body = dumps({"records": [{"age": 30, "income": 50, "home": "own"}]})
    status, out, _ = call(app, loop, "/predict", body, content_type)
    assert status == 200, out


def _full(layout: str) -> tuple[str, bytes]:
    """A legitimate request of exactly 10,000 rows (the default limit) in ``layout``."""
    n = 10_000
    rows = [{"age": float(i % 90), "income": 50.5, "home": "own, or rent [sic]"}
            for i in range(n)]
    cols = ["age", "income", "home"]
    if layout == "records":
        return "/predict", dumps({"records": rows})
    if layout == "split":
        return "/predict", dumps({"columns": cols, "data": [[r[c] for c in cols] for r in rows]})
    if layout == "columnar":
        return "/invocations", dumps({"inputs": {c: [r[c] for r in rows] for c in cols}})
    nested = layout == "v2 nested"
    return "/v2/models/credit/infer", dumps({"inputs": [
        {"name": c, "datatype": "BYTES" if c == "home" else "FP64",
         "shape": [n, 1] if nested else [n],
         "data": [[r[c]] for r in rows] if nested else [r[c] for r in rows]} for c in cols]})


@pytest.mark.parametrize("layout", ["records", "split", "columnar", "v2 flat", "v2 nested"])
def test_a_full_legitimate_request_is_within_the_bounds(app, loop, layout):
    """The counts that refuse a body before it is parsed leave room for the largest request a
    client may send, brackets and commas inside its strings included."""
    path, body = _full(layout)
    status, out, _ = call(app, loop, path, body, "application/json")
    assert status == 200, out


@pytest.mark.parametrize("name", ["predict records of empty objects", "predict rows of empty lists",
                                  "v2 data of zeros", "csv rows", "csv blank lines"])
def test_a_crafted_body_is_refused_before_it_is_materialized(app, loop, name):
    """2 MB of ``[{}, ...]`` parsed is ~50 MB of Python objects, a 2 MB CSV read whole ~190 MB;
    refused before that, the request allocates little beyond its body."""
    path, body, *ctype = CRAFTED[name]
    call(app, loop, "/predict", b"{}", "application/json")
    tracemalloc.start()
    try:
        status, out, _ = call(app, loop, path, body, ctype[0] if ctype else "application/json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 400 <= status < 500, out
    assert peak < 3 * len(body) + 2**20, f"{name}: {peak / 2**20:.1f} MiB allocated"
