"""What a test session leaves behind: processes it started and Ray's "current cluster" file.

A process belongs to the session when it carries the session's marker in its environment (every
child inherits it, including daemons that `ray start` detaches and HAProxy that Ray Serve starts)
or descends from the pytest process. Others' processes on a shared machine do not count.
``/tmp/ray/ray_current_cluster`` names the cluster a plain ``ray.init()`` / ``serve run``
connects to: one left behind that names a dead cluster makes them hang on a stale address.
Read from /proc (Linux), so no extra dependency.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MARKER = "RAYLANE_TEST_SESSION"
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


@dataclass(frozen=True)
class Snapshot:
    pids: frozenset[int]
    cluster_file: tuple[str, float] | None  # (content, mtime)
    started: float


def mark_session() -> str:
    """Put the session marker into this process's environment (children inherit it)."""
    os.environ.setdefault(MARKER, uuid.uuid4().hex)
    return os.environ[MARKER]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _ppid_and_state(pid: int) -> tuple[int, str]:
    stat = _read(Path(f"/proc/{pid}/stat")).decode(errors="replace")
    rest = stat.rpartition(")")[2].split()  # the command name may hold spaces and parens
    return (int(rest[1]), rest[0]) if len(rest) > 1 else (0, "X")


def session_processes(marker: str) -> dict[int, str]:
    """{pid: command line} of the live processes that belong to the session (pytest aside)."""
    me = os.getpid()
    tag = f"{MARKER}={marker}".encode()
    parents: dict[int, int] = {}
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        ppid, state = _ppid_and_state(pid)
        if state in {"Z", "X"}:
            continue
        parents[pid] = ppid
        if tag in _read(entry / "environ").split(b"\0"):
            found.add(pid)
    # descendants of pytest or of a marked process (Ray workers' `ray::` titles may overwrite
    # the memory their environment is read from)
    roots = found | {me}
    for pid in parents:
        seen, p = set(), parents[pid]
        while p and p not in seen:
            if p in roots:
                found.add(pid)
                break
            seen.add(p)
            p = parents.get(p, 0)
    out = {}
    for pid in found:
        cmd = _read(Path(f"/proc/{pid}/cmdline")).replace(b"\0", b" ").decode(errors="replace")
        if cmd.strip():  # kernel threads and vanished processes have none
            out[pid] = cmd.strip()
    return out


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
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmd = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace")
            if "gcs_server" in cmd and pattern.search(cmd):
                return True
    return False


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
