"""Fetch a registered raylane model from the MLflow Model Registry, as ONNX bytes and a schema.

This is the serving side of the registry: it reads the ``MLmodel`` YAML and ``model.onnx`` files
and never unpickles anything or loads an MLflow pyfunc.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion

from raylane.model.schema import FeatureSchema

SCHEMA_METADATA_KEY = "raylane_schema"
ONNX_FILE = "model.onnx"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelNotFoundError(LookupError):
    """The registry has no such model, alias or version."""


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
        # The version's own artifact location, resolved by this client: a models:/ URI would be
        # looked up in the process-wide registry, which may be another store.
        source = client.get_model_version_download_uri(mv.name, mv.version)
        local = Path(download_artifacts(artifact_uri=source, dst_path=tmp,
                                        tracking_uri=client.tracking_uri))
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        onnx_bytes = (local / ONNX_FILE).read_bytes()
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
