"""The Ray cluster's auth token, found as Ray's own clients find it (Ray 2.60 clusters use
token authentication): ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``. Sent to the dashboard's REST API as ``Authorization: Bearer``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def token_path(env: dict[str, str], home: Path | None = None) -> Path:
    """The token file Ray's clients read: ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``."""
    return Path(env.get("RAY_AUTH_TOKEN_PATH") or (home or _home(env)) / ".ray" / "auth_token")


def _home(env: dict[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def ray_token(env: dict[str, str] | None = None, home: Path | None = None) -> str | None:
    """The token from ``env`` (default ``os.environ``) or its file; None when none is found."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip()
    try:
        token = token_path(env, home).read_text().strip()
    except OSError:
        return None
    return token or None


def auth_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, or ``{}`` when there is no token."""
    token = ray_token(env)
    return {"Authorization": f"Bearer {token}"} if token else {}


def ensure_token(ray_cli: str, env: dict[str, str]) -> None:
    """Make sure a cluster started with ``env`` has a token: ``ray start --head`` in token mode
    refuses to start without one (it never writes one itself, unlike ``ray.init``). When none
    is found, Ray's own ``ray get-auth-token --generate`` writes ``~/.ray/auth_token``, readable
    by its owner only (under Ray's own umask it would be 0644); the token it prints is discarded.

    Raises RuntimeError when ``RAY_AUTH_TOKEN_PATH`` names a file without a token: Ray would
    generate one elsewhere and then still not find it there."""
    if ray_token(env) is not None:
        return
    if env.get("RAY_AUTH_TOKEN_PATH"):
        raise RuntimeError(f"RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']} holds no token; "
                           "put the cluster's token there or unset it")
    subprocess.run([ray_cli, "get-auth-token", "--generate"], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=120, umask=0o077)
    token_path(env).chmod(0o600)  # when an empty token file was there before, with its mode
