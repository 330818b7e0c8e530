"""Free ports and waiting for a server to answer."""

from __future__ import annotations

import os
import random
import socket
import time

import httpx

# Ports handed to servers the tests start: below Linux's ephemeral range (32768-60999), where
# every outgoing connection takes its local port, and above Ray's worker ports (10002-19999).
# A port the kernel hands out for bind(0) is free only until the server binds it, and on a busy
# machine an outgoing connection can take it first: a Ray dashboard then moves to the next port
# and the test waits on the old one. Each pytest-xdist worker draws from its own slice.
PORT_RANGE = (20000, 32700)
_given: set[int] = set()


def _slice() -> range:
    low, high = PORT_RANGE
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (high - low) // max(count, 1)
    start = low + size * min(index, count - 1)
    return range(start, start + size)


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port no one listens on, from this worker's slice of :data:`PORT_RANGE`, not handed out
    before in this process."""
    candidates = _slice()
    for _ in range(1000):
        port = random.choice(candidates)
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port in {candidates}")


def closed_port_url() -> str:
    """An HTTP address nothing listens on, and no server a test starts will take (a port from
    :func:`free_port` is never handed out again): every request is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Until ``url`` answers below 500; TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not come up in {timeout:.0f}s")
