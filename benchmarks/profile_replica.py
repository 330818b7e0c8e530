"""Where a served replica's CPU goes, by stage: py-spy on one replica under wrk load.

    python -m benchmarks.profile_replica [--body records_1000] [--seconds 15] [--out FILE]

Trains and registers the credit model as ``bench_serve`` does, serves it on a local Ray with the
RayService's cluster env (HAProxy ingress, one replica, micro-batching on), drives it with
``wrk`` (4 connections for 1,000-row bodies, 32 for one row) and samples the replica with
``py-spy record -r 200`` meanwhile. Each sample is put in the stage of its innermost frame that
names one (ONNX Runtime, the JSON parse, rows to columns and checks, prediction ids, encoding the
answer, the micro-batcher, Ray Serve's request path, uvicorn, Ray's metrics...), and the stages'
shares of the replica's samples are printed with the req/s. Not in CI.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_serve import (
    deploy_fixed,
    free_port,
    parse_wrk,
    ray_and_serve,
    train_and_register,
    v2_body,
    wrk_command,
)

# (stage, what a frame's text contains), innermost frame first: the first stage one of a
# sample's frames matches, scanning from the leaf, is the sample's stage.
STAGES = [
    ("onnx runtime", "onnxruntime/"),
    ("json parse", "decode_json (raylane/serving/limits.py"),
    ("rows to columns and checks", "raylane/serving/layouts.py"),
    ("rows to columns and checks", "raylane/model/feeds.py"),
    ("rows to columns and checks", "raylane/model/column_values.py"),
    ("rows to columns and checks", "raylane/serving/protocols/v2_tensors.py"),
    ("prediction ids", "raylane/serving/prediction_ids.py"),
    ("encoding the answer", "dumps (raylane/serving/http_io.py"),
    ("encoding the answer", "json_response (raylane/serving/http_io.py"),
    ("ray metrics", "ray/util/metrics.py"),
    ("ray metrics", "ray/serve/metrics.py"),
    ("micro-batcher", "raylane/serving/batcher.py"),
    ("raylane, other", "raylane/"),
    ("starlette / fastapi", "starlette/"),
    ("starlette / fastapi", "fastapi/"),
    ("ray serve request path", "ray/serve/"),
    ("uvicorn http", "uvicorn/"),
    ("ray core worker", "ray/_private/"),
]


def stage_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for stage, needle in STAGES:
            if needle in frame:
                return stage
    return "event loop and other"


def stage_shares(raw: Path) -> dict[str, float]:
    """Shares of the samples in py-spy's raw output per stage."""
    counts: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        counts[stage_of(stack.split(";"))] += int(n)
    total = sum(counts.values())
    return {stage: round(n / total, 3) for stage, n in counts.most_common()}


def replica_pid() -> int:
    out = subprocess.run(["pgrep", "-f", "ServeReplica:raylane"], capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[0])


def profile(tmp: Path, body_name: str, seconds: int) -> dict:
    """Serve the model in ``tmp``, load it with ``body_name`` and sample the replica."""
    py_spy = Path(sys.executable).parent / "py-spy"
    setup = train_and_register(tmp, 100, sklearn_peer=False)
    body, path, connections = {
        "records_1000": (json.dumps({"records": setup["big_rows"]}).encode(), "/predict", 4),
        "v2_1000": (v2_body(setup["big_rows"]), "/v2/models/credit/infer", 4),
        "one_row": (json.dumps({"records": [setup["row"]]}).encode(), "/predict", 32),
    }[body_name]
    port = free_port()
    raw = tmp / "py-spy.txt"
    with ray_and_serve(port):
        deploy_fixed(port, setup["uri"], batching=True, replicas=1)
        wrk = subprocess.Popen(wrk_command(f"http://127.0.0.1:{port}{path}", body, connections,
                                           seconds + 8, tmp),
                               stdout=subprocess.PIPE, text=True)
        time.sleep(4)  # past wrk's connection set-up
        subprocess.run([str(py_spy), "record", "-p", str(replica_pid()), "-d", str(seconds),
                        "-r", "200", "-f", "raw", "-o", str(raw), "--nonblocking"],
                       capture_output=True, check=True)
        load = parse_wrk(wrk.communicate()[0])
    return {"body": body_name, "connections": connections, "wrk": load,
            "replica_stage_shares": stage_shares(raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", choices=["records_1000", "v2_1000", "one_row"],
                        default="records_1000")
    parser.add_argument("--seconds", type=int, default=15, help="py-spy's sampling time")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="raylane-profile-replica-") as tmp:
        report = profile(Path(tmp), args.body, args.seconds)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
