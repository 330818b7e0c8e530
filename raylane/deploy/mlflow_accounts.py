"""The MLflow accounts of the Kubernetes platform, created idempotently through the basic-auth
app's REST API (``mlflow server --app-name basic-auth``).

Two accounts besides the admin:

- the *writer* (training, continuous training, monitoring jobs and the RayCluster ``raylane``):
  EDIT on every experiment and registered model: create runs, register versions, move
  ``champion``;
- the *reader* (the RayService's replicas): READ on every experiment and registered model: resolve
  ``champion`` and download the version's artifacts, nothing else.

The auth config ships ``default_permission = NO_PERMISSIONS``: any other account sees nothing
until granted. Running this again resets both passwords to the given ones and the grants to the
levels above. With ``--every-s N`` it keeps running (the MLflow pod's sidecar on Kubernetes): it
re-reads the accounts every N seconds and applies them again when they changed, so rotating a
Secret (mounted as a file, which the kubelet updates in place) rotates the password.

Credentials come from the environment or from files, never the command line::

    MLFLOW_TRACKING_URI                          the server
    MLFLOW_TRACKING_USERNAME / _PASSWORD         the admin (used by MLflow's own client)
    RAYLANE_MLFLOW_WRITER_CREDENTIALS            the writer account: a file in MLflow's credentials
                                                 format ([mlflow] mlflow_tracking_username = ...,
                                                 mlflow_tracking_password = ...), else
    RAYLANE_MLFLOW_WRITER_USERNAME / _PASSWORD   the writer account
    RAYLANE_MLFLOW_READER_CREDENTIALS            the reader account (file), else
    RAYLANE_MLFLOW_READER_USERNAME / _PASSWORD   the reader account

    python -m raylane.deploy.mlflow_accounts [--wait-s 300] [--every-s 60]
"""

from __future__ import annotations

import argparse
import configparser
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

# Wildcard grants: they hold for experiments and models created later, by anyone.
RESOURCES = (("experiment", "*"), ("registered_model", "*"))
WRITER_PERMISSION = "EDIT"
READER_PERMISSION = "READ"


@dataclass(frozen=True)
class Account:
    """One non-admin account and the permission it gets on every resource in RESOURCES."""

    username: str
    password: str
    permission: str

    def __repr__(self) -> str:  # never print a password
        return f"Account({self.username!r}, permission={self.permission!r})"


def read_credentials_file(path: str) -> tuple[str, str]:
    """(username, password) from a file in MLflow's credentials format (~/.mlflow/credentials)."""
    config = configparser.ConfigParser(interpolation=None)
    if not config.read(path):
        raise ValueError(f"{path}: no such credentials file")
    section = config["mlflow"] if config.has_section("mlflow") else {}
    user = section.get("mlflow_tracking_username", "")
    password = section.get("mlflow_tracking_password", "")
    if not user or not password:
        raise ValueError(f"{path}: expected [mlflow] with mlflow_tracking_username and "
                         "mlflow_tracking_password")
    return user, password


def accounts_from_env(env: Mapping[str, str] = os.environ) -> list[Account]:
    """The writer and reader accounts named in the environment (see the module docstring)."""
    out = []
    for role, permission in (("WRITER", WRITER_PERMISSION), ("READER", READER_PERMISSION)):
        if env.get(f"RAYLANE_MLFLOW_{role}_CREDENTIALS"):
            user, password = read_credentials_file(env[f"RAYLANE_MLFLOW_{role}_CREDENTIALS"])
        else:
            user = env.get(f"RAYLANE_MLFLOW_{role}_USERNAME", "")
            password = env.get(f"RAYLANE_MLFLOW_{role}_PASSWORD", "")
        if not user or not password:
            raise ValueError(f"RAYLANE_MLFLOW_{role}_USERNAME and _PASSWORD must both be set "
                             f"(or RAYLANE_MLFLOW_{role}_CREDENTIALS)")
        out.append(Account(user, password, permission))
    if out[0].username == out[1].username:
        raise ValueError("the writer and reader accounts must differ")
    return out


def wait_for_server(tracking_uri: str, timeout_s: float) -> None:
    """Block until ``<tracking_uri>/health`` answers 200 (it needs no credentials)."""
    deadline = time.monotonic() + timeout_s
    url = tracking_uri.rstrip("/") + "/health"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"MLflow at {tracking_uri} did not answer within {timeout_s}s")
        time.sleep(2)


def _already_exists(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_ALREADY_EXISTS"


def _does_not_exist(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


def ensure_user(client, account: Account) -> str:
    """Create the user, or reset its password if it exists. Returns "created" or "updated".
    Another MLflow pod's sidecar may create it at the same moment: that is "updated" too."""
    try:
        client.create_user(account.username, account.password)
        return "created"
    except Exception as exc:  # RestException from the server
        if not _already_exists(exc):
            raise
    client.update_user_password(account.username, account.password)
    return "updated"


def ensure_grant(client, username: str, resource_type: str, resource_id: str,
                 permission: str, attempts: int = 5) -> None:
    """Make ``username``'s grant on the resource exactly ``permission``.

    A grant already at that level is left alone: every MLflow pod runs this at start against
    the one shared user store, and replacing a grant revokes it for a moment, in which the
    accounts' requests to the other pods are refused. Only a grant at another level is
    replaced; a sidecar racing this one (its grant or revoke landing in between) means look
    again."""
    for _ in range(attempts):
        try:
            client.grant_user_permission(username, resource_type, resource_id, permission)
            return
        except Exception as exc:
            if not _already_exists(exc):
                raise
        current = client.get_user_permission(username, resource_type, resource_id).permission
        if current == permission:
            return
        try:  # the grant API refuses duplicates: replace the one at the wrong level
            client.revoke_user_permission(username, resource_type, resource_id)
        except Exception as exc:
            if not _does_not_exist(exc):
                raise
    raise RuntimeError(f"{username}: the {resource_type} {resource_id} grant kept changing "
                       f"under us ({attempts} attempts)")


def setup_accounts(tracking_uri: str, accounts: list[Account]) -> list[str]:
    """Create/refresh ``accounts`` and their grants; the admin's credentials come from
    MLFLOW_TRACKING_USERNAME/PASSWORD. Returns one log line per action."""
    from mlflow.server.auth.client import AuthServiceClient

    client = AuthServiceClient(tracking_uri)
    log = []
    for account in accounts:
        log.append(f"user {account.username}: {ensure_user(client, account)}")
        for resource_type, resource_id in RESOURCES:
            ensure_grant(client, account.username, resource_type, resource_id, account.permission)
            log.append(f"  {account.permission} on {resource_type} {resource_id}")
    return log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wait-s", type=float, default=300.0,
                        help="how long to wait for the server to answer /health")
    parser.add_argument("--every-s", type=float, default=None,
                        help="keep running: re-read the accounts this often, apply them on change")
    args = parser.parse_args(argv)
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not tracking_uri.startswith(("http://", "https://")):
        print("MLFLOW_TRACKING_URI must be the server's http(s) address", file=sys.stderr)
        return 2
    if not (os.environ.get("MLFLOW_TRACKING_USERNAME")
            and os.environ.get("MLFLOW_TRACKING_PASSWORD")):
        print("MLFLOW_TRACKING_USERNAME/PASSWORD (the admin) must be set", file=sys.stderr)
        return 2
    try:
        accounts = accounts_from_env()
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    wait_for_server(tracking_uri, args.wait_s)
    for line in setup_accounts(tracking_uri, accounts):
        print(line, flush=True)
    if args.every_s is None:
        return 0
    applied = accounts
    while True:  # the sidecar: apply again only when a Secret changed (a grant is briefly
        time.sleep(args.every_s)  # revoked while it is replaced)
        try:
            accounts = accounts_from_env()
            if [(a.username, a.password) for a in accounts] != [
                    (a.username, a.password) for a in applied]:
                for line in setup_accounts(tracking_uri, accounts):
                    print(line, flush=True)
                applied = accounts
        except Exception as exc:  # a half-rotated Secret or MLflow restarting: try again
            print(f"accounts not applied: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
