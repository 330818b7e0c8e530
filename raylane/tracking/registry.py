"""Log a checked ONNX graph to MLflow (onnx flavor) and manage its registry version and aliases.

Aliases, never stages: ``challenger`` for each new version, ``champion`` for the one to serve.
Every call goes through the client passed in; MLflow's fluent ``log_model`` would read the
process-global tracking URI and active run instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow.onnx
import onnx
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature

from raylane.model.schema import FeatureSchema
from raylane.model.store import DIGEST_TAG, ONNX_FILE, SCHEMA_METADATA_KEY, onnx_digest

CHAMPION = "champion"
CHALLENGER = "challenger"


def log_logged_model(
    client: MlflowClient, run_id: str, name: str, save: Callable[[str, Model], None],
) -> LoggedModel:
    """Create an MLflow 3 logged model from run ``run_id`` and upload what ``save`` writes.

    ``save(path, mlflow_model)`` is a flavor's ``save_model`` (it writes ``MLmodel`` into
    ``path``). This is ``mlflow.<flavor>.log_model`` done with a client: the model is linked to
    the run as an output and ends READY, or FAILED if saving or uploading raised.
    """
    run = client.get_run(run_id)
    model = client.create_logged_model(
        run.info.experiment_id, name=name, source_run_id=run_id,
        params={k: str(v) for k, v in run.data.params.items()},
    )
    try:
        mlflow_model = Model(artifact_path=model.artifact_location, model_uuid=model.model_id,
                             run_id=run_id, model_id=model.model_id)
        with tempfile.TemporaryDirectory(prefix="raylane-model-") as tmp:
            local = str(Path(tmp) / "model")
            save(local, mlflow_model)
            client.log_model_artifacts(model.model_id, local)
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


def log_onnx_model(
    client: MlflowClient,
    run_id: str,
    onnx_bytes: bytes,
    schema: FeatureSchema,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    extra_metadata: dict | None = None,
    name: str = "model",
) -> LoggedModel:
    """Log the graph from run ``run_id`` with signature, input example and raylane metadata.

    Serving reads ``model.onnx`` and the ``MLmodel`` metadata (feature schema, source run).
    ``save_as_external_data=False`` keeps the graph one self-contained file: serving refuses
    graphs with external data.
    """
    metadata = {SCHEMA_METADATA_KEY: schema.model_dump(), **(extra_metadata or {})}
    written: dict[str, str] = {}

    def save(path: str, mlflow_model: Model) -> None:
        mlflow.onnx.save_model(
            onnx.load_model_from_string(onnx_bytes), path,
            mlflow_model=mlflow_model,
            signature=infer_signature(input_example, output_example),
            input_example=input_example,
            metadata=metadata,
            save_as_external_data=False,
            pip_requirements=["onnxruntime"],
            onnx_execution_providers=["CPUExecutionProvider"],
        )
        # the file as uploaded (the flavor writes the graph again), so replicas can verify it
        written[DIGEST_TAG] = onnx_digest((Path(path) / ONNX_FILE).read_bytes())

    model = log_logged_model(client, run_id, name, save)
    client.set_logged_model_tags(model.model_id, written)
    return client.get_logged_model(model.model_id)


def register_version(
    client: MlflowClient, model: LoggedModel, name: str, run_id: str, tags: dict[str, str]
) -> ModelVersion:
    """Register the logged ``model`` as a new version of ``name`` with ``tags`` and the digest
    of its model.onnx that log_onnx_model recorded (replicas verify it before loading)."""
    if DIGEST_TAG in (model.tags or {}):
        tags = {**tags, DIGEST_TAG: model.tags[DIGEST_TAG]}
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(
                name, description="Registered by raylane: an ONNX graph that takes raw columns."
            )
        except MlflowException:  # another job created it in between
            client.get_registered_model(name)
    # The source is the model's artifact location, not ``models:/<model_id>``: MLflow's SQL
    # registry resolves a models:/ source with a default ``MlflowClient()``, i.e. through the
    # process-global tracking URI, whatever this client points at.
    return client.create_model_version(
        name, source=model.artifact_location, run_id=run_id, tags=tags, model_id=model.model_id
    )


def get_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version holding ``alias``, or None when the model or alias does not exist."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, alias, str(version))
