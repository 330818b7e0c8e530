"""Fetch a registered raylane model from the MLflow Model Registry, as ONNX bytes and a schema.

This is the serving side of the registry: it reads the ``MLmodel`` YAML and ``model.onnx`` files
and never unpickles anything or loads an MLflow pyfunc.

A version's artifact ``source`` is whatever a registry writer set, and MLflow's artifact clients
send the reader's credentials wherever it points; so a source is fetched only from the tracking
server's own artifact store (``mlflow-artifacts:``, a local store's files) or a root the operator
lists in ``RAYLANE_ARTIFACT_ROOTS``. The ``model.onnx`` fetched must match the sha256 recorded on
the version when it was registered (tag ``raylane.onnx.sha256``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion

from raylane.model.schema import FeatureSchema
from raylane.model.tags import ONNX_SHA256

log = logging.getLogger(__name__)

SCHEMA_METADATA_KEY = "raylane_schema"
ONNX_FILE = "model.onnx"
DIGEST_TAG = ONNX_SHA256
ENV_ARTIFACT_ROOTS = "RAYLANE_ARTIFACT_ROOTS"
# "1": refuse versions registered without a digest (before digests were recorded, or by hand).
ENV_REQUIRE_DIGEST = "RAYLANE_REQUIRE_MODEL_DIGEST"
_LOCAL_STORES = ("sqlite", "file", "")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelNotFoundError(LookupError):
    """The registry has no such model, alias or version."""


class UntrustedModelError(ModelNotFoundError):
    """A version whose files live outside the trusted artifact store, or whose model.onnx does
    not match the digest recorded at registration: refused before anything is loaded."""


def onnx_digest(onnx_bytes: bytes) -> str:
    return hashlib.sha256(onnx_bytes).hexdigest()


def check_source(source: str, tracking_uri: str, roots: list[str] | None = None) -> None:
    """UntrustedModelError unless ``source`` is in the tracking server's own artifact store
    (``mlflow-artifacts:`` on that server; local files of a local store; a ``runs:/`` or
    ``models:/`` reference it resolves) or under an operator's root (``RAYLANE_ARTIFACT_ROOTS``,
    comma- or space-separated, e.g. ``s3://mlflow-bucket/artifacts``)."""
    if roots is None:
        roots = [r for r in re.split(r"[,\s]+", os.environ.get(ENV_ARTIFACT_ROOTS, "")) if r]
    parts = urlsplit(source)
    scheme = parts.scheme.lower() if len(parts.scheme) > 1 else ""  # "C:" is a drive
    store = urlsplit(tracking_uri or "")
    store_scheme = store.scheme.lower() if len(store.scheme) > 1 else ""
    if "#" in source or "@" in parts.netloc or ".." in parts.path.split("/"):
        raise UntrustedModelError(f"model source {source!r}: fragments, user info and '..' are "
                                  "not accepted")
    if scheme in ("runs", "models"):
        return
    if scheme == "mlflow-artifacts" and parts.netloc.lower() in ("", store.netloc.lower()):
        return
    if scheme in ("", "file") and store_scheme in _LOCAL_STORES and parts.netloc in (
            "", "localhost"):
        return
    for root in roots:
        if source == root or source.startswith(root if root.endswith("/") else root + "/"):
            return
    raise UntrustedModelError(
        f"model source {source!r} is outside the tracking server's artifact store "
        f"({tracking_uri}); an operator lists other artifact roots in ${ENV_ARTIFACT_ROOTS}")


def verify_digest(mv: ModelVersion, onnx_bytes: bytes) -> None:
    """UntrustedModelError unless ``onnx_bytes`` match the digest registered with ``mv``."""
    recorded = (mv.tags or {}).get(DIGEST_TAG)
    if recorded is None:
        if os.environ.get(ENV_REQUIRE_DIGEST, "").strip() in ("1", "true", "yes"):
            raise UntrustedModelError(f"{mv.name} v{mv.version} has no {DIGEST_TAG} tag and "
                                      f"${ENV_REQUIRE_DIGEST} requires one")
        log.warning("%s v%s carries no %s tag: its model.onnx is not verified", mv.name,
                    mv.version, DIGEST_TAG)
        return
    actual = onnx_digest(onnx_bytes)
    if actual != recorded:
        raise UntrustedModelError(
            f"{mv.name} v{mv.version}: model.onnx has sha256 {actual}, not the {recorded} "
            "recorded at registration; refusing to load it")


def fetch_files(client: MlflowClient, mv: ModelVersion, dst: str) -> Path:
    """Download ``mv``'s files (MLmodel, model.onnx...) into ``dst`` after checking where they
    come from; their local directory."""
    # The version's own artifact location, resolved by this client: a models:/ URI would be
    # looked up in the process-wide registry, which may be another store.
    source = client.get_model_version_download_uri(mv.name, mv.version)
    check_source(source, client.tracking_uri)
    return Path(download_artifacts(artifact_uri=source, dst_path=dst,
                                   tracking_uri=client.tracking_uri))


@dataclass
class RegisteredModel:
    """A registered model version resolved to its files."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    onnx_bytes: bytes
    schema: FeatureSchema
    metadata: dict

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/name@alias`` or ``models:/name/3`` into (name, alias, version)."""
    match = _MODEL_URI.match(uri)
    if not match:
        raise ValueError(
            f"model uri {uri!r}: expected 'models:/<name>@<alias>' or 'models:/<name>/<version>'"
        )
    return match["name"], match["alias"], match["version"]


def resolve_version(client: MlflowClient, uri: str) -> tuple[ModelVersion, str | None]:
    """The ModelVersion a registry URI points at now, and the alias used (if any)."""
    name, alias, version = parse_model_uri(uri)
    try:
        if alias:
            return client.get_model_version_by_alias(name, alias), alias
        return client.get_model_version(name, version), None
    except Exception as exc:  # MlflowException for missing names/aliases/versions
        raise ModelNotFoundError(f"{uri}: {exc}") from exc


def load_registered_model(uri: str, tracking_uri: str | None = None) -> RegisteredModel:
    """Resolve ``uri`` in the registry at ``tracking_uri`` and download its ONNX graph and
    feature schema."""
    return load_version(MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), uri)


def load_version(client: MlflowClient, uri: str) -> RegisteredModel:
    """:func:`load_registered_model` through ``client`` (its registry and tracking store)."""
    mv, alias = resolve_version(client, uri)
    with tempfile.TemporaryDirectory(prefix="raylane-model-") as tmp:
        local = fetch_files(client, mv, tmp)
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        onnx_bytes = (local / ONNX_FILE).read_bytes()
    verify_digest(mv, onnx_bytes)
    metadata = mlmodel.get("metadata") or {}
    if SCHEMA_METADATA_KEY not in metadata:
        raise ModelNotFoundError(
            f"{uri} (version {mv.version}) has no '{SCHEMA_METADATA_KEY}' metadata: "
            "it was not exported by raylane"
        )
    schema = FeatureSchema.model_validate(metadata[SCHEMA_METADATA_KEY])
    return RegisteredModel(
        name=mv.name,
        version=str(mv.version),
        alias=alias,
        run_id=mv.run_id,
        onnx_bytes=onnx_bytes,
        schema=schema,
        metadata=metadata,
    )
