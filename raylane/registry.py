"""Log a checked ONNX graph to MLflow (onnx flavor) and manage its registry version and aliases.

Aliases, never stages: ``challenger`` for each new version, ``champion`` for the one to serve.
"""

from __future__ import annotations

import logging

import mlflow
import onnx
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo

from raylane.model_store import SCHEMA_METADATA_KEY
from raylane.schema import FeatureSchema

CHAMPION = "champion"
CHALLENGER = "challenger"


def log_onnx_model(
    onnx_bytes: bytes,
    schema: FeatureSchema,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    extra_metadata: dict | None = None,
    name: str = "model",
) -> ModelInfo:
    """Log the graph in the active run with signature, input example and raylane metadata.

    Returns the logged model's info (URI and id). ``save_as_external_data=False`` keeps the
    graph one self-contained file: serving refuses graphs with external data.
    """
    metadata = {SCHEMA_METADATA_KEY: schema.model_dump(), **(extra_metadata or {})}
    # MLflow checks the input example by running the model as a pyfunc, which feeds one
    # DataFrame to a graph that takes a tensor per column, and warns that it "failed". The
    # parity check and the serving warm-up are raylane's real checks; keep that warning quiet.
    mlflow_model_log = logging.getLogger("mlflow.models.model")
    level = mlflow_model_log.level
    mlflow_model_log.setLevel(logging.ERROR)
    try:
        return mlflow.onnx.log_model(
            onnx.load_model_from_string(onnx_bytes),
            name=name,
            signature=infer_signature(input_example, output_example),
            input_example=input_example,
            metadata=metadata,
            save_as_external_data=False,
            pip_requirements=["onnxruntime"],
            onnx_execution_providers=["CPUExecutionProvider"],
        )
    finally:
        mlflow_model_log.setLevel(level)


def register_version(
    client: MlflowClient, model: ModelInfo, name: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Register the logged ``model`` as a new version of ``name`` with ``tags``."""
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Registered by raylane: an ONNX graph that takes raw columns."
        )
    return client.create_model_version(
        name, source=model.model_uri, run_id=run_id, tags=tags, model_id=model.model_id
    )


def get_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None when the model or alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, alias, str(version))
