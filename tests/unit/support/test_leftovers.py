"""The session check of tests/conftest.py (support/processes.py) sees what a run leaves
behind, and only that."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from support import processes


def _wait_gone(pid: int) -> None:
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _wait_exec(pid: int, program: bytes) -> None:
    """Until the forked shell has exec'd ``program`` (``$!`` names the child before its exec)."""
    for _ in range(200):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(program):
                    return
        except OSError:
            return
        time.sleep(0.05)


def test_a_detached_process_of_the_session_is_a_leftover_until_it_exits(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "CURRENT_CLUSTER", tmp_path / "ray_current_cluster")
    marker = processes.mark_session()
    before = processes.snapshot(marker)
    # `sh` exits at once; the orphaned `sleep` keeps only the inherited environment marker,
    # as `ray start` daemons and Serve's HAProxy do
    pid_file = tmp_path / "pid"
    subprocess.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}"], check=True)
    pid = int(pid_file.read_text())
    _wait_exec(pid, b"sleep")
    try:
        found = processes.leftovers(marker, before, grace=0)
        assert any(f"process {pid}: sleep 60" in f for f in found), found
    finally:
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert not any(str(pid) in f for f in processes.leftovers(marker, before, grace=0))


def test_processes_of_others_do_not_count(tmp_path, monkeypatch):
    monkeypatch.setattr(processes, "CURRENT_CLUSTER", tmp_path / "ray_current_cluster")
    marker = processes.mark_session()
    before = processes.snapshot(marker)
    env = {k: v for k, v in os.environ.items() if k != processes.MARKER}
    pid_file = tmp_path / "pid"
    subprocess.run(["sh", "-c", f"sleep 60 & echo $! > {pid_file}"], check=True, env=env)
    pid = int(pid_file.read_text())
    try:
        assert not any(str(pid) in f for f in processes.leftovers(marker, before, grace=0))
    finally:
        os.kill(pid, signal.SIGKILL)


def test_a_stale_current_cluster_file_is_reported_and_removed(tmp_path, monkeypatch):
    cluster_file = tmp_path / "ray_current_cluster"
    monkeypatch.setattr(processes, "CURRENT_CLUSTER", cluster_file)
    marker = processes.mark_session()
    before = processes.snapshot(marker)
    assert processes.leftovers(marker, before, grace=0) == []
    cluster_file.write_text("127.0.0.1:1")  # no GCS listens there: a crashed cluster's file
    found = processes.leftovers(marker, before, grace=0)
    assert found and "is gone (127.0.0.1:1); removed" in found[0]
    assert not cluster_file.exists()


def test_an_xdist_worker_takes_a_marker_of_its_own_once(monkeypatch):
    """Each xdist worker checks its own leftovers: the marker inherited from the controller is
    replaced once, and the worker's marker is kept after that."""
    monkeypatch.setattr(processes, "_INHERITED", "controller")
    monkeypatch.setenv(processes.MARKER, "controller")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    worker = processes.mark_session()
    assert worker != "controller"
    assert processes.mark_session() == worker == os.environ[processes.MARKER]


def test_without_xdist_the_inherited_marker_is_kept(monkeypatch):
    monkeypatch.setattr(processes, "_INHERITED", "outer")
    monkeypatch.setenv(processes.MARKER, "outer")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert processes.mark_session() == "outer"


def _unix_socket(path, listening: bool) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    if listening:
        s.listen()
    return s


def test_only_settled_forkserver_dirs_whose_sockets_are_dead_are_removed(tmp_path):
    made = time.time() - 60
    dead, live, other, empty, fresh, old = (tmp_path / f"pymp-{n}" for n in
                                            ("dead", "live", "other", "empty", "fresh", "old"))
    for d in (dead, live, other, empty, fresh, old):
        d.mkdir()
    _unix_socket(dead / "listener-a", listening=False).close()
    listener = _unix_socket(live / "listener-b", listening=True)
    (other / "listener-c").write_text("not a socket")
    _unix_socket(fresh / "listener-d", listening=False).close()
    _unix_socket(old / "listener-e", listening=False).close()
    for d in (dead, live, other, empty):
        os.utime(d, (made, made))
    os.utime(old, (made - 3600, made - 3600))
    try:
        removed = processes.remove_dead_forkserver_dirs(since=made - 1, temp_dir=str(tmp_path))
    finally:
        listener.close()
    # a socket no process holds, settled and made during the session, goes; a held one, a dir
    # holding anything else, an empty one (its socket not bound yet), one made seconds ago and
    # one from before the session stay
    assert removed == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pymp-empty", "pymp-fresh", "pymp-live", "pymp-old", "pymp-other"]


def test_a_killed_forkserver_s_dir_is_removed_and_a_running_one_s_is_not(tmp_path):
    script = ("import multiprocessing as mp, time\n"
              "mp.set_start_method('forkserver')\n"
              "mp.Process(target=time.sleep, args=(0,)).start()\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            start_new_session=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        assert proc.stdout.readline().strip() == b"ready"
        dirs = sorted(tmp_path.glob("pymp-*"))
        assert dirs, "the forkserver made no temporary directory"
        settled = time.time() - 60
        for d in dirs:
            os.utime(d, (settled, settled))
        assert processes.remove_dead_forkserver_dirs(0, temp_dir=str(tmp_path)) == []
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the forkserver too, as `ray stop` ends Ray's
        proc.wait(10)
        proc.stdout.close()
    removed: list = []
    for _ in range(100):  # until the killed processes' sockets are closed
        removed += processes.remove_dead_forkserver_dirs(0, temp_dir=str(tmp_path))
        if not list(tmp_path.glob("pymp-*")):
            break
        time.sleep(0.1)
    assert sorted(removed) == dirs
