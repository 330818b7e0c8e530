"""`make serve` / `make serve-stop` (raylane.deploy.local) without starting Ray: the env it gives
the cluster, refusing to start without a champion, and a stop that ends exactly its processes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from raylane.deploy import local


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_cluster_env_is_the_serving_env_with_short_private_paths(tmp_path):
    state = local.DEFAULT_STATE
    env = local.cluster_env(state)
    assert {k: env[k] for k in local.SERVING_ENV} == local.SERVING_ENV
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    for key in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
        assert env[key].startswith(str(state)) and len(env[key]) < 97, key
    assert int(env["RAY_SERVE_HAPROXY_NBTHREAD"]) <= max(1, (os.cpu_count() or 2) // 2)


def test_start_refuses_without_a_registered_champion(tmp_path, capsys):
    state = tmp_path / "state"
    code = local.main(["start", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                       "--state-dir", str(state)])
    assert code == 1
    assert "models:/credit@champion not found" in capsys.readouterr().err
    assert not state.exists() and local.processes_of(state) == []


def test_stop_ends_the_processes_of_its_state_dir_and_nothing_else(tmp_path):
    state = tmp_path / "srv"
    state.mkdir()
    # a daemon that names the dir only in its environment (as Ray's do), with a child that
    # names it nowhere (as a `ray::` worker), and a stranger
    ours = subprocess.Popen(["sh", "-c", "sleep 60 & wait"], start_new_session=True,
                            env={**os.environ, "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(state)})
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        for _ in range(100):  # the child `sleep` is forked by sh
            if len(local.processes_of(state)) == 2:
                break
            time.sleep(0.05)
        pids = local.processes_of(state)
        assert ours.pid in pids and len(pids) == 2 and stranger.pid not in pids
        assert local.stop(state, grace=5) == 0
        ours.wait(timeout=5)
        assert not any(_alive(p) for p in pids)
        assert _alive(stranger.pid) and not state.exists()
    finally:
        for proc in (ours, stranger):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_head_processes_are_the_head_tree_not_the_workers_haproxy(tmp_path):
    """A head pod's death takes its own processes only: the worker node's HAProxy names the
    head's directory on its command line (Serve gives it the head's HAProxy paths) but lives
    under the worker's raylet, so it is not the head's."""
    state = tmp_path / "ha"
    head = state / "head-1"
    head.mkdir(parents=True)
    (state / "ha.json").write_text('{"heads": 1}')
    # the head's GCS (names its dir) with a child; the worker's raylet (names the worker's
    # dir) with a manager below it (names nothing) and, below that, an HAProxy naming the head
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "raylet.sh").write_text(f"sh {bin_ / 'manager.sh'} & wait\n")
    (bin_ / "manager.sh").write_text(
        f"sh -c 'sleep 60 & wait' haproxy -f {head / 'node' / 'haproxy.cfg'} & wait\n")
    gcs = subprocess.Popen(["sh", "-c", "sleep 60 & wait", "gcs", f"--dir={head}"],
                           start_new_session=True)
    raylet = subprocess.Popen(["sh", str(bin_ / "raylet.sh"), f"--temp_dir={state / 'worker'}"],
                              start_new_session=True)
    try:
        for _ in range(100):
            if len(local.processes_of(state)) == 6:
                break
            time.sleep(0.05)
        everything = local.processes_of(state)
        assert len(everything) == 6, everything
        named_head = [p for p in everything
                      if str(head).encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(named_head) == 2  # the GCS, and the worker's HAProxy
        pids = local.head_processes(state)
        assert gcs.pid in pids and len(pids) == 2, pids  # the GCS and its child
        assert raylet.pid not in pids and not set(pids) & (set(named_head) - {gcs.pid})
    finally:
        for proc in (gcs, raylet):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_haproxy_replays_requests_a_dead_replica_never_answered():
    """Ray's default (``conn-failure``) replays only requests never sent: the requests in flight
    on a replica that dies (SIGKILL, OOM, node loss) failed. ``empty-response`` replays those on
    another replica (``option redispatch`` is in Ray's template); a bounded number of times."""
    policy = local.SERVING_ENV["RAY_SERVE_HAPROXY_RETRY_ON"].split()
    assert {"conn-failure", "empty-response"} <= set(policy)
    assert 1 <= int(local.SERVING_ENV["RAY_SERVE_HAPROXY_RETRIES"]) <= 3


def test_status_reads_the_dashboards_rest_api_with_the_token():
    """`serve status`'s shape from Serve's REST document, over real HTTP, the token sent."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[tuple[str, str | None]] = []
    body = {"applications": {"credit": {
        "status": "RUNNING", "message": "", "route_prefix": "/",
        "deployments": {"RaylaneModel": {"status": "HEALTHY", "message": "", "replicas": [
            {"replica_id": "a", "state": "RUNNING"}, {"replica_id": "b", "state": "RUNNING"},
            {"replica_id": "c", "state": "STARTING"}]}}}}}

    class Dashboard(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            data = json.dumps(body).encode()
            self.send_response(200 if self.headers.get("Authorization") else 401)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Dashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        status = local._status(url, {"RAY_AUTH_TOKEN": "tok"})
        refused = local._status(url, {"RAY_AUTH_TOKEN_PATH": "/nonexistent"})
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0] == ("/api/serve/applications/", "Bearer tok")
    assert status == {"applications": {"credit": {
        "status": "RUNNING", "message": "",
        "deployments": {"RaylaneModel": {"status": "HEALTHY", "message": "",
                                         "replica_states": {"RUNNING": 2, "STARTING": 1}}}}}}
    assert refused == {}  # a 401 reads as "not answering yet", as a failed `serve status` did
    assert local._status("http://127.0.0.1:1", {}) == {}  # nothing listening
