"""A named lease in MLflow, so that scheduled runs of one job never overlap.

    python -m raylane.deploy.lease continuous-training -- python -m ray_jobs.continuous_training ...

takes the lease ``continuous-training`` (a tag of the MLflow experiment ``raylane-leases``, with its
holder and expiry), runs the command while renewing it, and gives it back when the command ends.
If another holder's lease has not expired, the command is not run: the process says who holds it
and exits 0 (an overlapping tick is not a failure to alert on). A holder that dies without giving
the lease back (its cluster deleted) holds it until ``--ttl-s`` after its last renewal.

MLflow has no compare-and-set, so the lease is taken by writing it, waiting ``--settle-s``, and
reading it back: of two runs that write within that window, only the last writer keeps it. A run
that writes more than ``--settle-s`` after its own empty read could still overlap: the window is
seconds, scheduled ticks are hours apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass

from raylane.model.tags import LEASE_PREFIX

EXPERIMENT = "raylane-leases"
TAG_PREFIX = LEASE_PREFIX


@dataclass(frozen=True)
class Holder:
    """Who holds a lease and until when (seconds since the epoch)."""

    holder: str
    expires: float

    def to_tag(self) -> str:
        return json.dumps({"holder": self.holder, "expires": self.expires})

    @classmethod
    def from_tag(cls, value: str | None) -> Holder | None:
        if not value:
            return None
        try:
            data = json.loads(value)
            return cls(str(data["holder"]), float(data["expires"]))
        except (ValueError, KeyError, TypeError):
            return None  # unreadable: treated as free


class Lease:
    """The lease ``name`` in the tracking server ``tracking_uri`` (None: MLflow's default)."""

    def __init__(self, name: str, tracking_uri: str | None = None, ttl_s: float = 600.0,
                 settle_s: float = 5.0, holder: str | None = None) -> None:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"lease name: expected letters, digits, - or _, got {name!r}")
        from mlflow import MlflowClient

        self.name, self.ttl_s, self.settle_s = name, ttl_s, settle_s
        self.holder = holder or f"{os.uname().nodename}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.key = TAG_PREFIX + name
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(EXPERIMENT)
                except Exception:  # created by a concurrent holder in between
                    exp = self.client.get_experiment_by_name(EXPERIMENT)
                    if exp is None:
                        raise
                    self._experiment_id = exp.experiment_id
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    def current(self) -> Holder | None:
        """The lease's holder now (None if free or expired)."""
        tags = self.client.get_experiment(self.experiment_id).tags
        found = Holder.from_tag(tags.get(self.key))
        return found if found and found.expires > time.time() else None

    def _write(self, value: str) -> None:
        self.client.set_experiment_tag(self.experiment_id, self.key, value)

    def acquire(self) -> Holder | None:
        """Take the lease: None when taken, else the other holder that keeps it."""
        other = self.current()
        if other and other.holder != self.holder:
            return other
        try:
            self._write(Holder(self.holder, time.time() + self.ttl_s).to_tag())
        except Exception:
            # two first writes of the tag race on the store's unique key: the other one won
            now = self.current()
            if now is not None and now.holder != self.holder:
                return now
            raise
        time.sleep(self.settle_s)
        now = self.current()
        if now is None or now.holder != self.holder:
            return now or Holder("(unknown)", 0.0)
        return None

    def renew(self) -> bool:
        """Push the expiry on; False if the lease is no longer ours."""
        now = self.current()
        if now is None or now.holder != self.holder:
            return False
        self._write(Holder(self.holder, time.time() + self.ttl_s).to_tag())
        return True

    def release(self) -> None:
        """Give the lease back if it is still ours."""
        now = self.current()
        if now is not None and now.holder == self.holder:
            self._write(Holder("", 0.0).to_tag())


def run_under_lease(lease: Lease, command: list[str]) -> int:
    """Run ``command`` holding ``lease``; 0 without running it if someone else holds it."""
    other = lease.acquire()
    if other is not None:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(other.expires))
        print(f"lease {lease.name!r} is held by {other.holder} until {until}: another run is in "
              "progress; not running", flush=True)
        return 0
    print(f"lease {lease.name!r} taken by {lease.holder}", flush=True)
    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(lease.ttl_s / 3):
            try:
                if not lease.renew():
                    print(f"lease {lease.name!r} lost", file=sys.stderr, flush=True)
            except Exception as exc:  # the tracking server may be down for a while
                print(f"lease {lease.name!r}: renewal failed: {exc}", file=sys.stderr, flush=True)

    renewer = threading.Thread(target=keep, daemon=True)
    renewer.start()
    try:
        return subprocess.run(command, check=False).returncode
    finally:
        stop.set()
        renewer.join(timeout=5)
        lease.release()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: python -m raylane.deploy.lease NAME [options] -- COMMAND ...",
              file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m raylane.deploy.lease",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("name")
    parser.add_argument("--ttl-s", type=float, default=600.0,
                        help="how long a holder that stops renewing keeps the lease")
    parser.add_argument("--settle-s", type=float, default=5.0,
                        help="wait between writing the lease and reading it back")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1:]
    if not command:
        print("error: no command after --", file=sys.stderr)
        return 2
    try:
        lease = Lease(args.name, ttl_s=args.ttl_s, settle_s=args.settle_s)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_under_lease(lease, command)


if __name__ == "__main__":
    sys.exit(main())
