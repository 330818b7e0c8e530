"""Serving benchmark: raylane on Ray Serve vs `mlflow models serve` vs a single uvicorn + ORT floor.

Everything runs in one go on this machine, on the same model (an XGBoost classifier trained on
the bundled credit data, exported to ONNX and registered in a temporary MLflow registry; the
native scikit-learn pipeline is logged with ``mlflow.sklearn`` for the mlflow peer only). Load
comes from ``wrk`` (installed with apt-get when missing) driven by a Lua script for POST bodies.

    python -m benchmarks.bench_serve                 # ~5 minutes on 2 cores
    python -m benchmarks.bench_serve --duration 15 --replicas 1 --out /tmp/bench_serve.json
    python -m benchmarks.bench_serve --only v2       # V2 inference vs KServe's ModelServer
    python -m benchmarks.bench_serve --only cold-start   # serve.run to first answer, autoscaling

Peers: ``mlflow models serve`` on the native pipeline; KServe 0.21's Python ModelServer on the
same ONNX graph over V2 (``benchmarks/kserve_peer.py`` in its own environment, ``.venv-kserve``,
created with uv on first use; ``--skip-kserve`` leaves it out); one uvicorn + ONNX Runtime
process as the floor. ``--only cold-start``: ``benchmarks/serve_cold_start.py`` on a new Ray.

Ray Serve runs with ``RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (HAProxy
ingress); HAProxy's files and ports are moved to a private directory and free ports, and its
process is killed at the end (it outlives Ray's shutdown).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.peer_env import peer_python

ROOT = Path(__file__).resolve().parents[1]
CREDIT = ROOT / "data" / "credit_data.csv"


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def wait_http(url: str, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


WRK_THREADS = 2  # --wrk-threads


def parse_wrk(out: str) -> dict:
    """The figures of a ``wrk --latency`` report: req/s, requests, p50/p75/p90/p99 and max (ms),
    non-2xx count, socket errors (the line, and its counts by kind: connect, read, write,
    timeout)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {m[0]: float(m[1]) * _UNIT[m[2]]
           for m in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    top = re.search(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out, re.M)
    requests = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    counts = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    if errors:
        counts.update({k: int(v) for k, v in re.findall(r"(\w+) (\d+)", errors.group(0))})
    return {"req_s": rps, "requests": int(requests.group(1)) if requests else None,
            "p50_ms": pct.get("50"), "p75_ms": pct.get("75"), "p90_ms": pct.get("90"),
            "p99_ms": pct.get("99"),
            "max_ms": float(top.group(1)) * _UNIT[top.group(2)] if top else None,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else None,
            "socket_error_counts": counts}


def run_wrk(url: str, body: bytes, connections: int, duration: int, workdir: Path,
            threads: int | None = None) -> dict:
    """POST ``body`` at ``url`` for ``duration`` s with ``wrk --latency``; :func:`parse_wrk`'s
    figures."""
    out = subprocess.run(wrk_command(url, body, connections, duration, workdir, threads),
                         capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def wrk_command(url: str, body: bytes, connections: int, duration: int, workdir: Path,
                threads: int | None = None) -> list[str]:
    """``wrk --latency`` POSTing ``body`` at ``url`` (its Lua script written to ``workdir``)."""
    script = workdir / f"post-{abs(hash(body))}.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
    )
    threads = min(threads or WRK_THREADS, connections)
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s",
            str(script), url]


def cpu_idle_share(window: float) -> float:
    """The machine's idle CPU share over ``window`` seconds (from /proc/stat)."""
    def snapshot() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, total

    idle0, total0 = snapshot()
    time.sleep(window)
    idle1, total1 = snapshot()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_idle(min_idle: float = 0.9, timeout: float = 90) -> float:
    """Wait until the CPUs are at least ``min_idle`` idle over 2 s (e.g. Ray's processes have
    exited after a shutdown), at most ``timeout`` s; return the last idle share."""
    deadline = time.monotonic() + timeout
    idle = cpu_idle_share(2)
    while idle < min_idle and time.monotonic() < deadline:
        idle = cpu_idle_share(2)
    return idle


def median_run(runs: list[dict]) -> dict:
    """The run with the median req/s (its own p50/p99), with every run's figures attached."""
    ordered = sorted(runs, key=lambda r: r["req_s"])
    return {**ordered[len(ordered) // 2], "runs": runs}


# ---------------------------------------------------------------- the floor peer


def floor_app(onnx_path: str, schema_path: str):
    """Starlette + ONNX Runtime, no Ray: parse records, build columns, run, answer JSON."""
    import onnxruntime as ort
    import orjson
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    from raylane.model.schema import FeatureSchema

    schema = FeatureSchema.from_json(Path(schema_path).read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])
    numeric = set(schema.numeric)
    labels = schema.class_labels

    async def predict(request):
        records = orjson.loads(await request.body())["records"]
        feeds = {}
        for name in schema.feature_names:
            values = [r[name] for r in records]
            dtype = np.float32 if name in numeric else object
            feeds[name] = np.array(values, dtype=dtype).reshape(-1, 1)
        label, probs = sess.run(None, feeds)
        body = {"predictions": [labels[i] for i in label.tolist()], "probabilities": probs}
        return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                        media_type="application/json")

    async def ping(request):
        return Response("ok")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]),
                             Route("/ping", ping)])


def serve_floor(port: int, onnx_path: str, schema_path: str) -> None:
    import uvicorn

    uvicorn.run(floor_app(onnx_path, schema_path), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


# ---------------------------------------------------------------- setup


def train_and_register(tmp: Path, n_estimators: int, sklearn_peer: bool = True) -> dict:
    """Train the credit XGBoost model, publish it as ``models:/credit@champion`` in a SQLite
    registry in ``tmp`` (the training job's path), and, with ``sklearn_peer``, log the native
    pipeline for the ``mlflow models serve`` peer; the model, rows and URIs to serve."""
    import mlflow.sklearn
    import pandas as pd

    from raylane.config import GatesConfig
    from raylane.data.read import infer_schema, read_table, split_data
    from raylane.model.families import get_family
    from raylane.model.metrics import METRICS
    from raylane.release.gates import check_gates, evaluate
    from raylane.release.publish import publish
    from raylane.tracking.experiments import open_experiment
    from raylane.tracking.registry import log_logged_model
    from raylane.tracking.runs import mlflow_client, parent_run
    from raylane.training.fit import fit_model

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    frame = read_table(str(CREDIT))
    schema = infer_schema(frame, "Status", None)
    data = split_data(frame, schema, 0.2, 0.1, 0)
    metric = METRICS["roc_auc"]
    fit = fit_model(data, get_family("xgboost"), {"n_estimators": n_estimators, "max_depth": 6},
                    metric, 0)
    gates = check_gates(evaluate(fit.pipeline, data, metric, 0.25), GatesConfig())
    client = mlflow_client(uri)
    example = data.holdout.X.head(3)
    with parent_run(client, open_experiment(client, "bench-serve")) as run_id:
        # the training job's own path: export, parity, register, promote to champion
        published = publish(fit.pipeline, schema, data.holdout, metric=metric, gates=gates,
                            client=client, registered_model="credit", run_id=run_id)
        # the mlflow peer serves the native pipeline (what a user would otherwise deploy)
        # (pickle is acceptable here: the peer only, never raylane's serving path)
        sk = sklearn_peer and log_logged_model(client, run_id, "sklearn_model", lambda path, mm: (
            mlflow.sklearn.save_model(
                fit.pipeline, path, mlflow_model=mm, input_example=example,
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE)
        ))
    assert published.decision.promoted, published.decision.reasons
    onnx_bytes = published.onnx_bytes
    (tmp / "model.onnx").write_bytes(onnx_bytes)
    (tmp / "schema.json").write_text(schema.to_json())
    holdout = data.holdout.X
    clean = holdout.dropna()
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in clean.iloc[0].items()}
    big = pd.concat([holdout] * (1000 // len(holdout) + 1)).head(1000)
    big_rows = [{k: (None if isinstance(v, float) and np.isnan(v) else
                     (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
                for r in big.to_dict(orient="records")]
    big_rows = [{k: (0.0 if v is None and k in schema.numeric else v) for k, v in r.items()}
                for r in big_rows]  # the floor peer does not handle nulls
    return {"uri": uri, "schema": schema, "onnx": onnx_bytes, "row": row, "big_rows": big_rows,
            "sklearn_uri": sk.model_uri if sk else None}


def in_process_rows_per_s(onnx_bytes: bytes, schema, rows: list[dict]) -> float:
    from raylane.model.onnx_model import OnnxModel
    from raylane.serving.protocols.native import parse_predict

    model = OnnxModel(onnx_bytes, schema)
    feeds, n = parse_predict({"records": rows}, schema, 10**6)
    model.run(feeds)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(20):
            model.run(feeds)
        best = min(best, (time.perf_counter() - t) / 20)
    return n / best


# ---------------------------------------------------------------- Ray Serve


def haproxy_env(d: Path) -> dict[str, str]:
    """The RayService's cluster env with HAProxy files in ``d`` (short: unix socket paths are
    capped at 97 characters); one source with `make serve` (raylane.deploy.local)."""
    from raylane.deploy.local import cluster_env

    return cluster_env(d)


def kill_haproxy(marker: str) -> list[int]:
    """Kill the haproxy processes whose command line names our private directory."""
    killed = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "haproxy" in cmd and marker in cmd:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
            except ProcessLookupError:
                pass
    return killed


def user_config(uri: str, batching: bool) -> dict:
    return {"model_uri": "models:/credit@champion", "tracking_uri": uri, "poll_interval_s": 0,
            "batching": {"enabled": batching, "max_batch_size": 16, "batch_wait_timeout_s": 0.0},
            "limits": {"max_rows": 10000, "max_body_bytes": 16 * 2**20}}


def logging_config() -> dict:
    """The logging settings of ``serve/config.yaml`` (access log off), as deployed."""
    import yaml

    return yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())["logging_config"]


def main() -> None:
    global WRK_THREADS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--wrk-threads", type=int, default=WRK_THREADS,
                        help="wrk threads (each drives its share of the connections)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per server and request size (the median run is reported); the "
                        "one-row floor is measured this many times before Ray and again after")
    parser.add_argument("--big-connections", type=int, default=4,
                        help="connections for the 1,000-row runs")
    parser.add_argument("--replicas", type=lambda v: [int(x) for x in v.split(",")],
                        default=[1, 2], help="replica counts to measure, e.g. 1,2")
    parser.add_argument("--n-estimators", type=int, default=100)
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", choices=["cold-start", "v2"], default=None,
                        help="only the cold start, or only V2 inference against the KServe peer")
    parser.add_argument("--skip-kserve", action="store_true",
                        help="no KServe peer (it needs its own environment, .venv-kserve)")
    parser.add_argument("--floor-server", nargs=3, metavar=("PORT", "ONNX", "SCHEMA"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        port, onnx_path, schema_path = args.floor_server
        serve_floor(int(port), onnx_path, schema_path)
        return

    WRK_THREADS = args.wrk_threads
    ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="raylane-bench-serve-"))
    print(f"workdir {tmp}", flush=True)
    setup = train_and_register(tmp, args.n_estimators, sklearn_peer=args.only is None)
    one = json.dumps({"records": [setup["row"]]}).encode()
    big = json.dumps({"records": setup["big_rows"]}).encode()
    big_v2 = v2_body(setup["big_rows"])  # the same 1,000 rows, columnar
    results: dict = {"machine_cpus": os.cpu_count(), "duration_s": args.duration,
                     "wrk_threads": WRK_THREADS, "repeats": args.repeats,
                     "connections": args.connections, "started": time.strftime("%H:%M:%S"),
                     "loadavg_start": os.getloadavg()}
    d, c = args.duration, args.connections
    v2 = v2_body(setup["row"])
    if args.only:
        if args.only == "cold-start":
            results["cold_start"] = cold_start_on_a_new_ray(setup, tmp, one, c)
        else:
            results.update(v2_against_kserve(setup, tmp, v2, args))
        results["finished"] = time.strftime("%H:%M:%S")
        results["loadavg_end"] = os.getloadavg()
        print(json.dumps(results, indent=2, default=str))
        if args.out:
            args.out.write_text(json.dumps(results, indent=2))
        return

    # in-process ONNX Runtime on the 1,000-row batch
    results["in_process_1000_rows_per_s"] = in_process_rows_per_s(
        setup["onnx"], setup["schema"], setup["big_rows"])

    # peer 1: mlflow models serve
    if not args.skip_mlflow:
        port = free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": setup["uri"],  # it execs `uvicorn`
               "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        mlf = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", setup["sklearn_uri"],
             "-p", str(port), "-h", "127.0.0.1", "--env-manager", "local"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/ping")
            body = json.dumps({"dataframe_records": [setup["row"]]}).encode()
            results["mlflow_one_row"] = run_wrk(f"http://127.0.0.1:{port}/invocations", body,
                                                c, d, tmp)
        finally:
            os.killpg(mlf.pid, signal.SIGTERM)
            mlf.wait(30)
        print("mlflow", results["mlflow_one_row"], flush=True)

    # peer 2: one uvicorn process, Starlette + ONNX Runtime, no Ray; measured before Ray starts
    # and again after it stops, so a drift of the machine during the run shows in both
    def measure_floor(big_too: bool) -> list[dict]:
        results.setdefault("idle_before_floor", []).append(round(wait_idle(), 3))
        port = free_port()
        floor = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_serve", "--floor-server", str(port),
             str(tmp / "model.onnx"), str(tmp / "schema.json")], cwd=ROOT,
            start_new_session=True,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/ping")
            url = f"http://127.0.0.1:{port}/predict"
            run_wrk(url, one, c, 3, tmp)  # warm the path
            runs = [run_wrk(url, one, c, d, tmp) for _ in range(args.repeats)]
            if big_too:
                results["floor_1000_rows"] = median_run(
                    [run_wrk(url, big, args.big_connections, d, tmp) for _ in range(args.repeats)])
        finally:
            os.killpg(floor.pid, signal.SIGTERM)
            floor.wait(30)
        return runs

    if not args.skip_kserve:
        results.update(measure_kserve(tmp, v2, args))
    floor_runs = measure_floor(big_too=True)
    print("floor", floor_runs, results["floor_1000_rows"], flush=True)

    # raylane on Ray Serve with the HAProxy ingress
    port = free_port()
    with ray_and_serve(port):

        def deploy(batching: bool, replicas: int) -> None:
            deploy_fixed(port, setup["uri"], batching, replicas)

        url = f"http://127.0.0.1:{port}/predict"
        # does micro-batching cost one-row latency at low concurrency? (one replica)
        deploy(batching=False, replicas=1)
        run_wrk(url, one, c, 3, tmp)  # warm the path
        results["serve_c1_no_batching"] = run_wrk(url, one, 1, d, tmp)
        deploy(batching=True, replicas=1)
        results["serve_c1_batching"] = run_wrk(url, one, 1, d, tmp)
        for replicas in args.replicas:
            if replicas != 1:
                deploy(batching=True, replicas=replicas)
            run_wrk(url, one, c, 3, tmp)
            results[f"serve_one_row_{replicas}_replicas"] = median_run(
                [run_wrk(url, one, c, d, tmp) for _ in range(args.repeats)])
            results[f"serve_1000_rows_{replicas}_replicas"] = median_run(
                [run_wrk(url, big, args.big_connections, d, tmp) for _ in range(args.repeats)])
            v2_url = f"http://127.0.0.1:{port}/v2/models/credit/infer"
            results[f"serve_1000_rows_v2_{replicas}_replicas"] = median_run(
                [run_wrk(v2_url, big_v2, args.big_connections, d, tmp)
                 for _ in range(args.repeats)])
            results[f"serve_v2_{replicas}_replicas"] = measure_v2(port, v2, tmp, args)
        best = max(args.replicas, key=lambda r: results[f"serve_one_row_{r}_replicas"]["req_s"])
        results["serve_one_row"] = results[f"serve_one_row_{best}_replicas"]
        best = max(args.replicas,
                   key=lambda r: results[f"serve_1000_rows_{r}_replicas"]["req_s"])
        results["serve_1000_rows"] = results[f"serve_1000_rows_{best}_replicas"]
        best = max(args.replicas,
                   key=lambda r: results[f"serve_1000_rows_v2_{r}_replicas"]["req_s"])
        results["serve_1000_rows_v2"] = results[f"serve_1000_rows_v2_{best}_replicas"]
        print("serve", {k: v for k, v in results.items() if k.startswith("serve")}, flush=True)

    floor_runs += measure_floor(big_too=False)
    results["floor_one_row"] = median_run(floor_runs)
    results["finished"] = time.strftime("%H:%M:%S")
    results["loadavg_end"] = os.getloadavg()
    summarize(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


KSERVE_VENV = ROOT / ".venv-kserve"
KSERVE_PINS = ["kserve==0.21.0", "onnxruntime==1.32.0"]


def kserve_python() -> Path:
    """KServe's Python ModelServer in its own environment (its FastAPI, uvicorn, protobuf)."""
    return peer_python(KSERVE_VENV, KSERVE_PINS)


def v2_body(rows: dict | list[dict]) -> bytes:
    """A row, or rows, as an Open Inference Protocol request: one input per column (columnar:
    ``shape [n]``, the column's values in ``data``)."""
    rows = [rows] if isinstance(rows, dict) else rows

    def datatype(values: list) -> str:
        if isinstance(values[0], str):
            return "BYTES"
        return "INT64" if all(type(v) is int for v in values) else "FP64"

    columns = {k: [r[k] for r in rows] for k in rows[0]}
    assert all(v is not None for vs in columns.values() for v in vs)  # V2 data has no nulls
    return json.dumps({"inputs": [{"name": k, "shape": [len(vs)], "datatype": datatype(vs),
                                   "data": vs} for k, vs in columns.items()]}).encode()


def measure_v2(port: int, body: bytes, tmp: Path, args) -> dict:
    url = f"http://127.0.0.1:{port}/v2/models/credit/infer"
    run_wrk(url, body, args.connections, 3, tmp)  # warm the path
    return median_run([run_wrk(url, body, args.connections, args.duration, tmp)
                       for _ in range(args.repeats)])


def measure_kserve(tmp: Path, body: bytes, args) -> dict:
    """KServe 0.21's ModelServer (one uvicorn worker, gRPC off) on the same graph
    (benchmarks/kserve_peer.py): with its defaults, and without its per-request latency log."""
    python = kserve_python()
    out = {}
    for key, latency_logging in (("kserve_v2", "true"), ("kserve_v2_no_latency_log", "false")):
        wait_idle()
        port = free_port()
        peer = subprocess.Popen(
            [str(python), str(ROOT / "benchmarks" / "kserve_peer.py"), "--model_name", "credit",
             "--onnx", str(tmp / "model.onnx"), "--http_port", str(port), "--workers", "1",
             "--enable_grpc", "false", "--enable_latency_logging", latency_logging],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60)
            out[key] = measure_v2(port, body, tmp, args)
        finally:
            os.killpg(peer.pid, signal.SIGTERM)
            peer.wait(30)
        print(key, out[key], flush=True)
    return out


def v2_against_kserve(setup: dict, tmp: Path, body: bytes, args) -> dict:
    """The KServe peer, then raylane's V2 route with each of ``--replicas``."""
    results = measure_kserve(tmp, body, args)
    port = free_port()
    with ray_and_serve(port):
        for replicas in args.replicas:
            deploy_fixed(port, setup["uri"], batching=True, replicas=replicas)
            results[f"serve_v2_{replicas}_replicas"] = measure_v2(port, body, tmp, args)
            print(replicas, results[f"serve_v2_{replicas}_replicas"], flush=True)
    results["v2_vs_kserve"] = {
        f"{replicas}_replicas": {
            peer: round(results[f"serve_v2_{replicas}_replicas"]["req_s"]
                        / results[peer]["req_s"], 3)
            for peer in ("kserve_v2", "kserve_v2_no_latency_log")}
        for replicas in args.replicas}
    return results


def deploy_fixed(port: int, uri: str, batching: bool, replicas: int) -> None:
    """The app with ``replicas`` fixed replicas of 1 CPU and serve/config.yaml's logging;
    returns once it answers (and 2 s more for the replicas to settle)."""
    from ray import serve

    from raylane.serving.app import ModelServer

    serve.run(
        ModelServer.options(
            num_replicas=replicas, max_ongoing_requests=64,
            ray_actor_options={"num_cpus": 1}, logging_config=logging_config(),
            user_config=user_config(uri, batching),
        ).bind(),
        name="raylane", route_prefix="/",
    )
    wait_http(f"http://127.0.0.1:{port}/healthz")
    time.sleep(2)


@contextmanager
def ray_and_serve(port: int) -> Iterator[None]:
    """A local Ray (4 logical CPUs: room for a rolling update) with the HAProxy ingress's
    cluster env and Serve's HTTP on ``port``; Serve, Ray and HAProxy stopped on exit."""
    hp_dir = Path(tempfile.mkdtemp(prefix="rlhp", dir="/tmp"))
    os.environ.update(haproxy_env(hp_dir))
    import ray
    from ray import serve

    try:
        for attempt in range(3):  # a busy machine can time out the node's start
            try:
                ray.init(num_cpus=4, include_dashboard=False, address="local")
                break
            except Exception:
                if attempt == 2:
                    raise
                ray.shutdown()
                time.sleep(5)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            print(f"killed haproxy pids {kill_haproxy(str(hp_dir))}", flush=True)


def cold_start_on_a_new_ray(setup: dict, tmp: Path, one: bytes, connections: int,
                            load_s: int = 90) -> dict:
    """On a new Ray: serve.run of the app with serve/config.yaml's autoscaling to its first
    answer, then a load step of ``connections`` to the second replica answering
    (benchmarks/serve_cold_start)."""
    import ray
    from ray import serve

    from benchmarks import serve_cold_start
    from raylane.serving.app import ModelServer

    # the replicas' log lines are the clock of their side: written as they happen (the
    # throughput-optimized env buffers 1,000 request-path records; 1 is Ray's default)
    os.environ["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] = "1"
    deployment = ModelServer.options(
        autoscaling_config=serve_cold_start.autoscaling_config(), max_ongoing_requests=64,
        ray_actor_options={"num_cpus": 1},
        logging_config={**logging_config(), "enable_access_log": True},  # answers' times
        user_config=user_config(setup["uri"], True),
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/predict"
    with ray_and_serve(port):
        session_dir = Path(ray._private.worker.global_worker.node.get_session_dir_path())
        return serve_cold_start.measure(
            lambda: serve.run(deployment.bind(), name="raylane", route_prefix="/"), url, one,
            session_dir, "raylane", wrk_command(url, one, connections, load_s, tmp), load_s)


def summarize(r: dict) -> None:
    s1, f1 = r["serve_one_row"], r["floor_one_row"]
    checks = {
        "one-row req/s >= 50% of the uvicorn floor": s1["req_s"] >= 0.5 * f1["req_s"],
        "one-row p99 < 30 ms": (s1["p99_ms"] or 1e9) < 30,
        "1000-row rows/s >= 50% of in-process ORT":
            r["serve_1000_rows"]["req_s"] * 1000 >= 0.5 * r["in_process_1000_rows_per_s"],
        "1000-row rows/s >= 85% of in-process ORT (records)":
            r["serve_1000_rows"]["req_s"] * 1000 >= 0.85 * r["in_process_1000_rows_per_s"],
        "1000-row rows/s >= 85% of in-process ORT (V2, columnar)":
            r["serve_1000_rows_v2"]["req_s"] * 1000 >= 0.85 * r["in_process_1000_rows_per_s"],
        "batching costs <= 1 ms p50 at 1 connection":
            r["serve_c1_batching"]["p50_ms"] - r["serve_c1_no_batching"]["p50_ms"] <= 1.0,
    }
    if "mlflow_one_row" in r:
        checks[">= 30x mlflow models serve"] = s1["req_s"] >= 30 * r["mlflow_one_row"]["req_s"]
    r["ratios"] = {
        "serve_vs_floor": s1["req_s"] / f1["req_s"],
        "serve_vs_mlflow": s1["req_s"] / r["mlflow_one_row"]["req_s"] if "mlflow_one_row" in r
        else None,
        "serve_1000_rows_per_s": r["serve_1000_rows"]["req_s"] * 1000,
        "serve_1000_vs_in_process": r["serve_1000_rows"]["req_s"] * 1000
        / r["in_process_1000_rows_per_s"],
        "serve_1000_v2_vs_in_process": r["serve_1000_rows_v2"]["req_s"] * 1000
        / r["in_process_1000_rows_per_s"],
        "batching_p50_cost_ms": r["serve_c1_batching"]["p50_ms"]
        - r["serve_c1_no_batching"]["p50_ms"],
    }
    if "kserve_v2" in r:
        best_v2 = max(v["req_s"] for k, v in r.items() if k.startswith("serve_v2_"))
        r["ratios"]["v2_vs_kserve"] = best_v2 / r["kserve_v2"]["req_s"]
        checks["V2 >= 3x KServe's ModelServer"] = best_v2 >= 3 * r["kserve_v2"]["req_s"]
    r["checks"] = checks
    print(json.dumps(r, indent=2, default=str))


if __name__ == "__main__":
    main()
