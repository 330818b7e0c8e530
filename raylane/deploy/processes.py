"""Processes on this machine, read from /proc (Linux; no extra dependency): which belong to
something (a state directory, a test session) together with their descendants, and ending them.

Descendants count because Ray's workers retitle themselves (``ray::...``): their command lines
and the memory their environment is read from no longer name what started them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    cmdline: bytes  # NUL-separated, as in /proc
    environ: bytes  # NUL-separated; empty if unreadable

    @property
    def command(self) -> str:
        return self.cmdline.replace(b"\0", b" ").decode(errors="replace").strip()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def table() -> dict[int, Process]:
    """Every live process but this one and zombies, by pid."""
    me, out = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        stat = _read(entry / "stat").decode(errors="replace")
        fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and parens
        if len(fields) < 2 or fields[0] in {"Z", "X"}:
            continue
        pid = int(entry.name)
        out[pid] = Process(pid, int(fields[1]), _read(entry / "cmdline"), _read(entry / "environ"))
    return out


def with_descendants(roots: Iterable[int], procs: dict[int, Process]) -> set[int]:
    """``roots`` and every live process below one of them."""
    found = set(roots)
    for pid, proc in procs.items():
        seen, p = set(), proc.ppid
        while p and p not in seen:
            if p in found:
                found.add(pid)
                break
            seen.add(p)
            p = procs[p].ppid if p in procs else 0
    return found


def matching(test: Callable[[Process], bool], roots: Iterable[int] = ()) -> dict[int, Process]:
    """The live processes ``test`` accepts, those below ``roots``, and their descendants."""
    procs = table()
    found = with_descendants({pid for pid, p in procs.items() if test(p)} | set(roots), procs)
    return {pid: procs[pid] for pid in found if pid in procs}


def terminate(find: Callable[[], Iterable[int]], grace: float = 20.0) -> list[int]:
    """SIGTERM what ``find`` returns, SIGKILL what is still there after ``grace`` s; the pids
    left alive (empty when all ended)."""
    pids = list(find())
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = list(find())
        if not pids:
            break
    return pids
