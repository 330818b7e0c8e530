"""Ports for the servers tests start: outside the kernel's ephemeral range (where outgoing
connections take their ports), a slice of their own per pytest-xdist worker, never one that
is listened on or was handed out before."""

from __future__ import annotations

import socket
from pathlib import Path

from support import net


def ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def test_the_range_is_below_the_ephemeral_ports_and_above_rays_worker_ports():
    low, high = net.PORT_RANGE
    assert high < ephemeral_range()[0]
    assert low > 19999  # Ray's max_worker_port


def test_each_worker_draws_from_its_own_slice(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    slices = []
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        slices.append(set(net._slice()))
    assert slices[0] and slices[1] and not slices[0] & slices[1]
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT")
    assert set(net._slice()) == set(range(*net.PORT_RANGE))  # one process: the whole range


def test_a_port_listened_on_or_given_before_is_not_given(monkeypatch):
    # Both ports come from this worker's own slice: a port next to one the kernel handed out
    # for bind(0) is in the ephemeral range, where any outgoing connection may hold it.
    monkeypatch.setattr(net, "_given", set())
    taken, spare = net.free_port(), net.free_port()
    monkeypatch.setattr(net, "_given", set())
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", taken))
        listener.listen()
        monkeypatch.setattr(net, "_slice", lambda: [taken, spare])
        port = net.free_port()
        assert port == spare and port in net._given
        monkeypatch.setattr(net, "_slice", lambda: [port])
        try:
            net.free_port()
        except RuntimeError as exc:
            assert str(port) in str(exc)
        else:
            raise AssertionError("a port handed out before was handed out again")
