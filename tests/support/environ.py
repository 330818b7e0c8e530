"""Process-global state a test fixture must hand back: ``os.environ`` and the Ray/Serve driver.

Clusters a later test starts in-process (``ray.cluster_utils.Cluster``, ``ray.init``) spawn
their GCS, raylets, dashboard and workers with this process's environment, so a variable one
module's fixture leaves behind silently changes every cluster started after it. The worst:
a ``ray.init()`` that starts a local cluster turns token authentication on for the whole process
(``os.environ["RAY_AUTH_MODE"] = "token"`` plus a refresh of the cached RayConfig), so a later
cluster's dashboard answers plain HTTP requests with 401. It also exports
``RAY_USAGE_STATS_ENABLED=0``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def restored_environ() -> Iterator[None]:
    """Give ``os.environ`` back exactly as it was, whatever the body (or Ray) set or removed, and
    make Ray's in-process config and token cache re-read it (Ray caches ``RAY_AUTH_MODE`` and
    the token there)."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        raylet = sys.modules.get("ray._raylet")
        if raylet is not None:
            # What Ray's own tests do between auth settings (reset_auth_token_state): the
            # config first, then the token cache. A token cached from a token-auth cluster
            # made the next, auth-less cluster's workers fail to reach this driver
            # (OwnerDiedError on the first Ray Data read).
            raylet.Config.initialize("")
            raylet.AuthenticationTokenLoader.instance().reset_cache()


def driver_state() -> list[str]:
    """What a previous test left connected in this process: a Ray driver, a cached Serve client."""
    found = []
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        found.append("ray.init() still connected")
    context = sys.modules.get("ray.serve.context")
    if context is not None and getattr(context, "_global_client", None) is not None:
        found.append("ray.serve.context._global_client still cached")
    return found
