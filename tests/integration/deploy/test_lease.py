"""raylane.deploy.lease on a real MLflow store (a SQLite file, no server): one holder at a time,
an expired lease taken over, overlapping runs refuse without running their command."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from raylane.deploy.lease import Lease, run_under_lease


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('lease') / 'mlflow.db'}"


def test_one_holder_at_a_time_and_release(uri):
    a = Lease("ct-a", uri, ttl_s=60, settle_s=0, holder="a")
    b = Lease("ct-a", uri, ttl_s=60, settle_s=0, holder="b")
    assert a.acquire() is None
    other = b.acquire()
    assert other is not None and other.holder == "a"
    assert a.renew() and not b.renew()
    a.release()
    assert b.acquire() is None and a.acquire().holder == "b"


def test_an_expired_lease_is_taken_over(uri):
    dead = Lease("ct-b", uri, ttl_s=0.5, settle_s=0, holder="dead")
    assert dead.acquire() is None
    time.sleep(0.6)  # it stopped renewing
    assert Lease("ct-b", uri, ttl_s=60, settle_s=0, holder="next").acquire() is None


def test_concurrent_acquirers_one_wins(uri):
    """Two runs started at the same moment (missed cron ticks): exactly one keeps the lease."""
    leases = [Lease("ct-c", uri, ttl_s=60, settle_s=1.0, holder=f"h{i}") for i in range(2)]
    for lease in leases:
        _ = lease.experiment_id  # created before the race, as the first run ever would
    results: dict[str, object] = {}
    threads = [threading.Thread(target=lambda le=le: results.__setitem__(le.holder, le.acquire()))
               for le in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v is None for v in results.values()) == [False, True], results


def test_a_run_that_finds_the_lease_held_does_not_run(uri, tmp_path, capsys):
    holder = Lease("ct-d", uri, ttl_s=60, settle_s=0, holder="first")
    assert holder.acquire() is None
    marker = tmp_path / "ran"
    second = Lease("ct-d", uri, ttl_s=60, settle_s=0, holder="second")
    code = run_under_lease(second, [sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert code == 0 and not marker.exists()
    assert "held by first" in capsys.readouterr().out
    holder.release()
    assert run_under_lease(second, [sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert second.current() is None  # given back when the command ended


def test_cli_refuses_bad_arguments():
    for args, message in ((["bad name!", "--", "x"], "lease name"), (["ct", "--"], "no command"),
                          (["ct", "x"], "usage")):
        out = subprocess.run([sys.executable, "-m", "raylane.deploy.lease", *args],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and message in out.stderr, out.stderr
