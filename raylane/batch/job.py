"""The batch-predict job: read the input with Ray Data, score with an actor pool of ONNX Runtime
sessions, write scored rows as Parquet under the output and refused ones under ``rejected/``."""

from __future__ import annotations

from dataclasses import dataclass

import ray.data
from ray.data.expressions import col

from raylane.batch.scoring import INPUT, PREDICTION, REASON, Scorer
from raylane.data.distributed import read_dataset
from raylane.data.sources import filesystem_for, resolve
from raylane.locations import check_location
from raylane.model.store import RegisteredModel

REJECTED = "rejected"


@dataclass
class BatchResult:
    scored: int
    rejected: int
    output: str
    version: str


def score_dataset(dataset: ray.data.Dataset, model: RegisteredModel,
                  id_column: str | None = None, actors: int = 1,
                  batch_size: int = 4096) -> ray.data.Dataset:
    """Every row of ``dataset`` scored or rejected (see raylane.batch.scoring)."""
    return dataset.map_batches(
        Scorer, batch_format="pyarrow", batch_size=batch_size,
        fn_constructor_kwargs={"onnx_bytes": model.onnx_bytes,
                               "schema_json": model.schema.to_json(),
                               "version": model.version, "id_column": id_column},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)


def check_locations(input_spec: str | list[str], output: str) -> None:
    """LocationError unless every input and the output are allowed locations
    (:mod:`raylane.locations`): the job's arguments come from whoever submits it."""
    for spec in [input_spec] if isinstance(input_spec, str) else input_spec:
        check_location("--input", spec)
    check_location("--output", output)


def check_actors(actors: int) -> None:
    """ValueError unless the cluster has a CPU left for reading besides ``actors`` sessions of
    one CPU each (with none left the read tasks never run and the job waits forever)."""
    if actors < 1:
        raise ValueError(f"--actors: expected at least 1, got {actors}")
    cpus = ray.cluster_resources().get("CPU", 0)
    if actors + 1 > cpus:
        raise ValueError(f"--actors: {actors} ONNX Runtime sessions take one CPU each and "
                         f"reading the input needs one more; the cluster has {cpus:g} CPUs")


def batch_predict(input_spec: str | list[str], output: str, model: RegisteredModel,
                  id_column: str | None = None, actors: int = 1) -> BatchResult:
    """Score the table ``input_spec`` names into ``output`` (a directory or URI)."""
    check_locations(input_spec, output)
    check_actors(actors)
    source = resolve(input_spec)
    if id_column:
        sample = read_dataset(source).limit(1).to_pandas()
        if id_column not in sample.columns:
            raise ValueError(f"--id-column: column {id_column!r} is not in the input; columns "
                             f"are {list(sample.columns)}")
    scored = score_dataset(read_dataset(source), model, id_column, actors).materialize()
    fs, path = filesystem_for(output)
    path = path.rstrip("/")
    # Expression filters run in Arrow over whole blocks (a Python predicate runs per row); the
    # refused rows are few, so they are materialized once and counted from that.
    bad = scored.filter(expr=col(REASON).is_not_null()).materialize()
    rejected = bad.count()
    scored.filter(expr=col(REASON).is_null()).drop_columns([REASON, INPUT]).write_parquet(
        path, filesystem=fs)
    bad.select_columns(["id", "model_version", REASON, INPUT]).write_parquet(
        f"{path}/{REJECTED}", filesystem=fs)
    return BatchResult(scored=scored.count() - rejected, rejected=rejected, output=output,
                       version=model.version)


__all__ = ["PREDICTION", "BatchResult", "batch_predict", "check_actors", "check_locations",
           "score_dataset"]
