#!/usr/bin/env python3
"""A stand-in for `kubectl` on PATH: replays a scenario of RayService statuses.

FAKE_KUBECTL_SCENARIO: JSON with ``rayservice`` (the statuses `get rayservice` returns, one per
call, the last repeated) and ``rayclusters`` (name -> head image). FAKE_KUBECTL_LOG: every call
is appended as one JSON line (argv, and for `apply -k` the kustomization it was given).
`port-forward svc/... LOCAL:REMOTE` serves /v2/health/ready and /predict on LOCAL until killed.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


def log(entry: dict) -> None:
    with open(os.environ["FAKE_KUBECTL_LOG"], "a") as out:
        out.write(json.dumps(entry) + "\n")


class Serve(BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200 if self.path == "/v2/health/ready" else 404, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._send(200, {"predictions": ["good"] * len(body["records"])})

    def log_message(self, *args):
        pass


def main(argv: list[str]) -> int:
    scenario = json.loads(Path(os.environ["FAKE_KUBECTL_SCENARIO"]).read_text())
    args = argv[2:] if argv[:1] == ["-n"] else argv
    entry = {"argv": argv}
    if args[:2] == ["apply", "-k"]:
        entry["kustomization"] = (Path(args[2]) / "kustomization.yaml").read_text()
        log(entry)
        print("rayservice.ray.io/raylane-serve configured")
        return 0
    log(entry)
    if args[:2] == ["get", "rayservice"]:
        counter = Path(os.environ["FAKE_KUBECTL_LOG"] + ".reads")
        n = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(n + 1))
        seq = scenario["rayservice"]
        print(json.dumps(seq[min(n, len(seq) - 1)]))
        return 0
    if args[:2] == ["get", "raycluster"]:
        image = scenario["rayclusters"][args[2]]
        print(json.dumps({"spec": {"headGroupSpec": {"template": {"spec": {
            "containers": [{"name": "ray-head", "image": image}]}}}}}))
        return 0
    if args[:1] == ["port-forward"]:
        HTTPServer(("127.0.0.1", int(args[2].split(":")[0])), Serve).serve_forever()
    print(f"fake kubectl: unexpected {argv}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
