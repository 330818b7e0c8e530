"""Refuse an MLflow store that would vanish with a Ray job's working directory.

``ray job submit --working-dir .`` unpacks the directory into
``<ray temp>/session_*/runtime_resources/working_dir_files/_ray_pkg_<hash>/`` and runs the job
there; Ray deletes it with the session. A relative (or default) ``sqlite:///mlflow.db``, a file
store, or MLflow's default artifact root (``./mlruns`` of the working directory) would land in
it: the job would print ``registered models:/...`` and the runs and the model would be gone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

from raylane.config import ConfigError

# Ray's runtime_env packages, under <session dir>/runtime_resources (ray._private.runtime_env).
_RAY_PACKAGE_DIRS = ("working_dir_files", "py_modules_files")
HOW_TO_FIX = (
    "Set the tracking URI to a store outside it: an absolute path "
    "(--set mlflow.tracking_uri=sqlite:////data/mlflow.db, or MLFLOW_TRACKING_URI in the "
    "cluster's environment) or an MLflow server (--set mlflow.tracking_uri=http://mlflow:5000)"
)


def ray_package_dir(path: str | Path) -> Path | None:
    """The Ray runtime-env package directory (an uploaded working dir) ``path`` lies in."""
    parts = Path(os.path.realpath(path)).parts
    for i, part in enumerate(parts[:-1]):
        if part == "runtime_resources" and parts[i + 1] in _RAY_PACKAGE_DIRS:
            return Path(*parts[: i + 3])
    return None


def local_path(uri: str) -> Path | None:
    """The local file or directory a tracking or artifact URI names (None for servers)."""
    parsed = urlparse(uri)
    if uri.startswith("databricks"):
        return None
    if parsed.scheme == "sqlite":
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        path = path.split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or re.fullmatch(r"[A-Za-z]", parsed.scheme):  # a plain path
        return Path(uri)
    return None


def check_store(uri: str, what: str = "the MLflow tracking store") -> None:
    """ConfigError if ``uri`` names a local store inside a Ray job's uploaded working dir."""
    path = local_path(uri)
    package = ray_package_dir(path) if path is not None else None
    if package is not None:
        raise ConfigError(
            f"{what} {uri} is {Path(os.path.realpath(path))}, inside the working directory Ray "
            f"uploaded for this job ({package}), which Ray deletes with its session: the runs "
            f"and the registered model would be lost. {HOW_TO_FIX}"
        )


def new_experiment_artifact_location(tracking_uri: str, experiment: str,
                                     cwd: str | Path | None = None) -> str | None:
    """Where a new experiment's artifacts go: MLflow's default (``./mlruns`` of ``cwd``), or
    next to the SQLite database when that default lies in a Ray working dir (a submitted job
    with an absolute ``sqlite:///`` URI would otherwise keep its runs but lose its models)."""
    path = local_path(tracking_uri)
    if urlparse(tracking_uri).scheme != "sqlite" or path is None:
        return None
    if ray_package_dir(Path(cwd or os.getcwd()) / "mlruns") is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", experiment).strip("_") or "experiment"
    return str(Path(os.path.realpath(path)).parent / "mlruns" / slug)
