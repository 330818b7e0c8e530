"""MLflow bookkeeping for one job: the parent run, its dataset, config, figures and tables."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml

from raylane.config import PipelineConfig
from raylane.data import PreparedData
from raylane.plots import close

log = logging.getLogger(__name__)


def setup(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at the tracking server and experiment; returns the experiment id."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return mlflow.set_experiment(experiment).experiment_id


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


def log_job_context(config: PipelineConfig, data: PreparedData, table: pd.DataFrame) -> None:
    """Config, dataset (with digest), schema and git commit, on the active (parent) run."""
    mlflow.log_dict(config.model_dump(mode="json"), "config/pipeline.json")
    mlflow.log_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
                    "config/pipeline.yaml")
    mlflow.log_text(data.schema.to_json(), "data/schema.json")
    dataset = mlflow.data.from_pandas(
        table, source=data.source, targets=data.schema.target, name=Path(data.source).name
    )
    mlflow.log_input(dataset, context="training")
    tags = {
        "raylane.dataset.digest": data.digest,
        "raylane.dataset.rows": str(len(table)),
        "raylane.task": data.schema.task,
        "raylane.family": config.model.family,
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    mlflow.set_tags(tags)
    mlflow.log_params(
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


def log_figure(fig, name: str) -> None:
    mlflow.log_figure(fig, f"plots/{name}.png")
    close(fig)


def log_frame(frame: pd.DataFrame, path: str) -> None:
    """A DataFrame as a CSV artifact (readable anywhere) at ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(path).name
        frame.to_csv(local, index=False)
        mlflow.log_artifact(str(local), artifact_path=str(Path(path).parent))


def log_json(obj: Any, path: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=str), path)
