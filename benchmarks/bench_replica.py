"""The replica's own request path, in process: what one request costs the replica's CPU.

    python -m benchmarks.bench_replica --out benchmarks/results/replica.json

The app a replica serves (``raylane.serving.api.build_api`` bound to a ``DataPlane`` holding the
100-tree credit XGBoost model, published by the training job's own path into a temporary MLflow)
called as ASGI in one process, one request at a time on one event loop: no Ray, no HAProxy, no
sockets, so the figure is the replica's work per request (routing, body read, JSON parse, the
row checks, the ONNX Runtime session, the answer), the part that more replicas divide. Bodies:
one row without nulls (the one ``bench_serve`` sends), one row with a null (as ~12% of the
credit table's rows have), 1,000 rows of the holdout (nulls kept); and the first row as a V2
request to ``/v2/models/credit/infer``, and the 1,000 rows as one (columnar; V2 has no nulls,
so a missing number is sent as 0). For each, the best of
``--repeats`` runs of ``--requests`` requests: wall and CPU (``time.process_time``) per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from benchmarks.bench_serve import train_and_register, v2_body

RESULTS = Path(__file__).resolve().parent / "results"


def json_row(row: dict) -> dict:
    """A row as a client's JSON carries it: NaN as null, NumPy scalars as Python ones."""
    out = {}
    for k, v in row.items():
        v = v.item() if hasattr(v, "item") else v
        out[k] = None if isinstance(v, float) and math.isnan(v) else v
    return out


def build_app(onnx_bytes: bytes, schema):
    """The replica's app over a data plane holding the model."""
    from raylane.model.onnx_model import OnnxModel
    from raylane.model.store import RegisteredModel
    from raylane.serving.api import bind, build_api
    from raylane.serving.dataplane import DataPlane
    from raylane.serving.holder import ModelHolder
    from raylane.serving.loaded_model import LoadedModel
    from raylane.serving.protocols import PROTOCOLS
    from raylane.serving.settings import ServingSettings
    from raylane.serving.telemetry import ServingTelemetry

    registered = RegisteredModel(name="credit", version="1", alias="champion", run_id="bench",
                                 onnx_bytes=onnx_bytes, schema=schema, metadata={})
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    plane.configure(ServingSettings.model_validate({}))
    plane.holder.current = LoadedModel(registered=registered, onnx=OnnxModel(onnx_bytes, schema),
                                       uri="models:/credit@champion")
    api = build_api(PROTOCOLS)
    bind(api, plane, PROTOCOLS)
    return api


async def post(app, body: bytes, path: str = "/predict") -> int:
    """One ``POST`` of ``body`` to ``path`` through the ASGI app; its status."""
    sent, status = False, 0

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
               "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
               "query_string": b"", "root_path": "", "headers": headers,
               "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}, receive, send)
    return status


async def measure(app, body: bytes, requests: int, repeats: int,
                  path: str = "/predict") -> dict:
    for _ in range(max(requests // 10, 5)):  # warm: the session's first runs, the code paths
        status = await post(app, body, path)
        assert status == 200, status
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            await post(app, body, path)
        best_wall = min(best_wall, (time.perf_counter() - wall) / requests)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / requests)
    return {"requests": requests, "repeats": repeats, "wall_ms": round(best_wall * 1e3, 4),
            "cpu_ms": round(best_cpu * 1e3, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="one-row requests per run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS / "replica.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="raylane-bench-replica-") as tmp:
        model = train_and_register(Path(tmp), 100, sklearn_peer=False)
    from raylane.data.read import infer_schema, read_table, split_data

    frame = read_table(str(Path(__file__).resolve().parents[1] / "data" / "credit_data.csv"))
    holdout = split_data(frame, infer_schema(frame, "Status", None), 0.2, 0.1, 0).holdout.X
    with_null = holdout[holdout.isna().any(axis=1)].iloc[0]
    rows = [json_row(r) for r in pd.concat([holdout] * 3).head(1000).to_dict("records")]
    bodies = {
        "one_row": {"records": [model["row"]]},
        "one_row_with_a_null": {"records": [json_row(with_null.to_dict())]},
        "1000_rows": {"records": rows},
    }
    # the same 1,000 rows as a V2 request (columnar; V2 data has no nulls: a missing number is 0)
    no_nulls = [{k: 0.0 if v is None else v for k, v in r.items()} for r in rows]
    app = build_app(model["onnx"], model["schema"])
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load_average_start": [round(x, 2) for x in os.getloadavg()]}}
    for name, body in bodies.items():
        requests = args.requests if name.startswith("one_row") else max(args.requests // 20, 20)
        out[name] = asyncio.run(measure(app, json.dumps(body).encode(), requests, args.repeats))
        print(name, out[name], flush=True)
    # the same row as an Open Inference Protocol request (one input per column)
    out["v2_one_row"] = asyncio.run(measure(app, v2_body(model["row"]), args.requests,
                                            args.repeats, "/v2/models/credit/infer"))
    print("v2_one_row", out["v2_one_row"], flush=True)
    out["v2_1000_rows"] = asyncio.run(measure(app, v2_body(no_nulls),
                                              max(args.requests // 20, 20), args.repeats,
                                              "/v2/models/credit/infer"))
    print("v2_1000_rows", out["v2_1000_rows"], flush=True)
    out["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("results:", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
