"""The Ray cluster's auth token, found as Ray's own clients find it (Ray 2.60 clusters use
token authentication): ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``. Sent to the dashboard's REST API as ``Authorization: Bearer``."""

from __future__ import annotations

import os
from pathlib import Path


def ray_token(env: dict[str, str] | None = None, home: Path | None = None) -> str | None:
    """The token from ``env`` (default ``os.environ``) or its file; None when none is found."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN", "").strip():
        return env["RAY_AUTH_TOKEN"].strip()
    path = Path(env.get("RAY_AUTH_TOKEN_PATH") or (home or Path.home()) / ".ray" / "auth_token")
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def auth_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}``, or ``{}`` when there is no token."""
    token = ray_token(env)
    return {"Authorization": f"Bearer {token}"} if token else {}
