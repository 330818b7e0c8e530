"""MLflow bookkeeping for one job through an explicit client: the parent run, its dataset, config,
figures and tables.

Nothing here uses MLflow's process-global state (``mlflow.set_tracking_uri``, the fluent active
run): every call names its client and run id, so two jobs (or two tests) in one process cannot
write to each other's store.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow.data
import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from raylane.config import PipelineConfig
from raylane.data.read import PreparedData
from raylane.model.tags import DATASET_DIGEST, DATASET_ROWS, FAMILY, TASK
from raylane.tracking.plots import close

log = logging.getLogger(__name__)


def mlflow_client(uri: str) -> MlflowClient:
    """A client for the tracking store and registry at ``uri``.

    The registry URI is given explicitly: left out, MLflow would take the process-wide registry
    URI (``mlflow.set_registry_uri``, ``$MLFLOW_REGISTRY_URI``) if anything set one.
    """
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str,
                      artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created if missing (safe against a concurrent creator),
    with its artifacts at ``artifact_location`` (default: the store's)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _end_status(exc: BaseException | None) -> str:
    if exc is None:
        return RunStatus.to_string(RunStatus.FINISHED)
    # Ctrl-C and a stop request are not failures of the run: it was killed.
    killed = not isinstance(exc, Exception)
    return RunStatus.to_string(RunStatus.KILLED if killed else RunStatus.FAILED)


@contextmanager
def parent_run(
    client: MlflowClient, experiment_id: str, run_name: str | None = None,
    run_id: str | None = None,
) -> Iterator[str]:
    """Create a run (or reopen ``run_id``), yield its id, and end it on exit.

    It ends FINISHED, FAILED on an exception, KILLED on KeyboardInterrupt/SystemExit. The run
    carries the tags ``mlflow.start_run`` would add (user, source, git commit).
    """
    if run_id is None:
        run = client.create_run(experiment_id, run_name=run_name, tags=resolve_tags())
        run_id = run.info.run_id
    else:
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    try:
        yield run_id
    except BaseException as exc:
        client.set_terminated(run_id, status=_end_status(exc))
        raise
    client.set_terminated(run_id, status=_end_status(None))


class RunLog:
    """Writes to one run by id: params, metrics, tags, text, figures, tables, dataset inputs."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    def params(self, params: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, step) for k, v in metrics.items()
        ])

    def tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def text(self, text: str, path: str) -> None:
        self.client.log_text(self.run_id, text, path)

    def json(self, obj: Any, path: str) -> None:
        self.text(json.dumps(obj, indent=2, default=str), path)

    def figure(self, fig, name: str) -> None:
        """A matplotlib figure as ``plots/<name>.png``; the figure is closed."""
        try:
            self.client.log_figure(self.run_id, fig, f"plots/{name}.png")
        finally:
            close(fig)

    def frame(self, frame: pd.DataFrame, path: str) -> None:
        """A DataFrame as a CSV artifact (readable anywhere) at ``path``."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / Path(path).name
            frame.to_csv(local, index=False)
            parent = str(Path(path).parent)
            self.client.log_artifact(self.run_id, str(local),
                                     artifact_path=None if parent == "." else parent)

    def dataset(self, table: pd.DataFrame, source: str, target: str, context: str) -> None:
        """``table`` as a dataset input of the run (name, digest, schema, source)."""
        dataset = mlflow.data.from_pandas(table, source=source, targets=target,
                                          name=Path(source).name)
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(
            dataset=dataset._to_mlflow_entity(),
            tags=[InputTag(key=MLFLOW_DATASET_CONTEXT, value=context)],
        )])


def git_commit(cwd: str | Path = ".") -> str | None:
    """The commit of the working directory (or $GIT_COMMIT, as images set it), if any."""
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def log_job_context(
    run: RunLog, config: PipelineConfig, data: PreparedData, table: pd.DataFrame
) -> None:
    """Config, dataset (with digest), schema and git commit, on the parent run."""
    run.client.log_dict(run.run_id, config.model_dump(mode="json"), "config/pipeline.json")
    run.text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
             "config/pipeline.yaml")
    run.text(data.schema.to_json(), "data/schema.json")
    run.dataset(table, data.source, data.schema.target, context="training")
    tags = {
        DATASET_DIGEST: data.digest,
        DATASET_ROWS: str(len(table)),
        TASK: data.schema.task,
        FAMILY: config.model.family,
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    run.tags(tags)
    run.params(
        {
            "data.path": config.data.path,
            "data.target": config.data.target,
            "rows.train": len(data.train.y),
            "rows.valid": len(data.valid.y),
            "rows.holdout": len(data.holdout.y),
            "tune.num_samples": config.tune.num_samples,
            "tune.scheduler": config.tune.scheduler.type,
            "tune.search_alg": config.tune.search_alg,
            "seed": config.seed,
        }
    )


_GLOBAL_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID",
               "MLFLOW_EXPERIMENT_NAME")


@contextmanager
def mlflow_globals_restored() -> Iterator[None]:
    """Undo, on exit, what third-party code sets in MLflow's process-wide state.

    Ray's ``MLflowLoggerCallback.setup`` (Tune calls it inside ``Tuner.fit``) runs
    ``mlflow.set_tracking_uri``/``set_registry_uri``, which also export ``$MLFLOW_TRACKING_URI``
    to every later subprocess. Raylane's own calls name their client, so the job does not need
    that state; restoring it keeps a process (a notebook, a test session) as it was. MLflow has
    no public getter that tells "unset" from its default, hence the module attributes.
    """
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = {key: os.environ.get(key) for key in _GLOBAL_ENV}
    tracking_uri = tracking_utils._tracking_uri
    registry_uri = registry_utils._registry_uri
    try:
        yield
    finally:
        tracking_utils.set_tracking_uri(tracking_uri)
        registry_utils.set_registry_uri(registry_uri)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
