"""Processes the tests start: finding them (by session marker, by a directory they name), ending
them, and what a test session leaves behind (processes, Ray's "current cluster" file, and the
temporary directories of multiprocessing forkservers that were killed).
The /proc walk and the terminate routine are raylane.deploy.processes (`make serve-stop` uses
them too).

A process belongs to the session when it carries the session's marker in its environment (every
child inherits it, including daemons that `ray start` detaches and HAProxy that Ray Serve starts)
or descends from the pytest process. Others' processes on a shared machine do not count.
``/tmp/ray/ray_current_cluster`` names the cluster a plain ``ray.init()`` / ``serve run``
connects to: one left behind that names a dead cluster makes them hang on a stale address.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from raylane.deploy import processes

MARKER = "RAYLANE_TEST_SESSION"
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")
_INHERITED = os.environ.get(MARKER)  # an xdist worker's: its controller's marker


@dataclass(frozen=True)
class Snapshot:
    pids: frozenset[int]
    cluster_file: tuple[str, float] | None  # (content, mtime)
    started: float


def mark_session() -> str:
    """Put the session marker into this process's environment (children inherit it). An xdist
    worker inherits its controller's marker, so it takes one of its own: each worker checks
    what it left behind, not what the other worker is running."""
    current = os.environ.get(MARKER)
    if current is None or (os.environ.get("PYTEST_XDIST_WORKER") and current == _INHERITED):
        os.environ[MARKER] = uuid.uuid4().hex
    return os.environ[MARKER]


def session_processes(marker: str) -> dict[int, str]:
    """{pid: command line} of the live processes that belong to the session (pytest aside):
    marked, or below pytest or a marked process."""
    tag = f"{MARKER}={marker}".encode()
    found = processes.matching(lambda p: tag in p.environ.split(b"\0"), roots=[os.getpid()])
    return {pid: p.command for pid, p in found.items() if p.command}  # kernel threads: none


def naming(needle: str | Path) -> dict[int, str]:
    """{pid: command line} of the live processes whose command line names ``needle`` (a Ray
    session or temp directory), and their descendants."""
    raw = str(needle).encode()
    found = processes.matching(lambda p: raw in p.cmdline)
    return {pid: p.command for pid, p in found.items()}


def wait_none_naming(needle: str | Path, wait: float = 0) -> list[str]:
    """Command lines of live processes naming ``needle``, after waiting up to ``wait`` s for
    none (a stopped Ray takes a moment to reap its processes)."""
    deadline = time.monotonic() + wait
    while True:
        found = naming(needle)
        if not found or time.monotonic() >= deadline:
            return [f"{pid} {cmd}" for pid, cmd in sorted(found.items())]
        time.sleep(0.5)


def terminate_naming(needle: str | Path, grace: float = 10) -> list[int]:
    """SIGTERM, then SIGKILL, every process naming ``needle``; the pids left alive."""
    return processes.terminate(lambda: naming(needle), grace)


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process, SIGKILL after ``grace`` s; wait for it either way."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process's group, SIGKILL after ``grace`` s."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        except ProcessLookupError:
            pass


def _cluster_file() -> tuple[str, float] | None:
    try:
        return CURRENT_CLUSTER.read_text().strip(), CURRENT_CLUSTER.stat().st_mtime
    except OSError:
        return None


def snapshot(marker: str) -> Snapshot:
    return Snapshot(frozenset(session_processes(marker)), _cluster_file(), time.time())


def _gcs_alive(address: str) -> bool:
    """Whether a live gcs_server on this machine listens on ``address``'s port (anyone's)."""
    port = address.rpartition(":")[2]
    pattern = re.compile(rf"--gcs_server_port={re.escape(port)}\b")
    return any("gcs_server" in p.command and pattern.search(p.command)
               for p in processes.table().values())


def leftovers(marker: str, before: Snapshot, grace: float = 30.0) -> list[str]:
    """What the session left behind, waiting up to ``grace`` s for stopping processes to exit.

    A stale ``ray_current_cluster`` written during the session (its cluster is gone) is removed
    here as well as reported, so it cannot make a later ``serve run`` hang."""
    deadline = time.monotonic() + grace
    while True:
        procs = {p: c for p, c in session_processes(marker).items() if p not in before.pids}
        if not procs or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    found = [f"process {pid}: {cmd[:300]}" for pid, cmd in sorted(procs.items())]
    now = _cluster_file()
    if now is not None and now != before.cluster_file and now[1] >= before.started:
        address = now[0]
        ours = any(address.rpartition(":")[2] in cmd and "gcs_server" in cmd
                   for cmd in procs.values())
        if ours:
            found.append(f"{CURRENT_CLUSTER} names a cluster the session left running: {address}")
        elif not _gcs_alive(address):
            CURRENT_CLUSTER.unlink(missing_ok=True)
            found.append(f"{CURRENT_CLUSTER} named a cluster that is gone ({address}); removed")
    return found


def _bound_unix_paths() -> set[str]:
    """The paths of the unix sockets a live process holds (``/proc/net/unix``). Read, never
    connected to: a forkserver takes any connection for a fork request and exits on an empty one."""
    try:
        lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {fields[7] for fields in (line.split(maxsplit=7) for line in lines) if len(fields) == 8}


def remove_dead_forkserver_dirs(since: float, settled_s: float = 10.0,
                                temp_dir: str | None = None) -> list[Path]:
    """Remove the ``pymp-*`` directories made since ``since`` whose every entry is a unix socket
    no live process holds; the removed ones.

    Python's multiprocessing forkserver (Ray's dashboard starts one) binds its listener in such
    a directory and removes it at exit, so one that was killed (``ray stop``, a shutdown) leaves
    it. A directory younger than ``settled_s`` is left alone: its forkserver may be starting.
    """
    removed = []
    now = time.time()
    bound = _bound_unix_paths()
    for d in Path(temp_dir or tempfile.gettempdir()).glob("pymp-*"):
        try:
            st = d.lstat()
            entries = list(d.iterdir())
        except OSError:
            continue
        if (not stat.S_ISDIR(st.st_mode) or st.st_mtime < since or now - st.st_mtime < settled_s
                or not entries):
            continue
        if all(stat.S_ISSOCK(e.lstat().st_mode) and str(e) not in bound for e in entries):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
