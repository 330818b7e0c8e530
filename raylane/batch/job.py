"""The batch-predict job: read the input with Ray Data, score it with ONNX Runtime sessions (one
per worker process of Ray Data's tasks, or an actor pool), write scored rows as Parquet under the
output and refused ones under ``rejected/``.

One streaming pass: each block is read, scored and written, and the sessions write a block's few
refused rows themselves, so no stage holds the whole table (a table larger than the cluster's
memory scores in the memory of a few blocks). The counts are read back from the Parquet footers
of the files this run wrote.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data

from raylane.batch.scoring import PREDICTION, Scorer, score_block
from raylane.data.distributed import cluster_cpus, read_dataset, read_unit_bytes
from raylane.data.sources import filesystem_for, resolve
from raylane.locations import check_location
from raylane.model.store import RegisteredModel

REJECTED = "rejected"
# Rows a session scores at a time. Per-batch costs (Ray Data's slicing, the checks' and the
# output's fixed work) were a fifth of a 4,096-row batch's time; from 16k rows on they are noise
# (benchmarks/README_scale.md).
BATCH_SIZE = 32_768
MAX_BATCH_SIZE = 1 << 20


@dataclass
class BatchResult:
    scored: int
    rejected: int
    output: str
    version: str


def score_dataset(dataset: ray.data.Dataset, model: RegisteredModel,
                  id_column: str | None = None, actors: int = 0,
                  batch_size: int = BATCH_SIZE,
                  rejected_to: str | None = None, prefix: str = "") -> ray.data.Dataset:
    """Every row of ``dataset`` scored or rejected (see raylane.batch.scoring); with
    ``rejected_to``, the rejected rows are written there and the dataset holds scored rows.

    ``actors=0``: tasks, each worker process keeping one session. Each task takes whole blocks
    and scores them ``batch_size`` rows at a time, so Ray Data fuses reading, scoring and
    writing into one task per read unit on every CPU (a ``map_batches`` batch size would keep
    the read apart, its tasks holding CPUs while they wait for scoring to take their blocks).
    Where a read task yields several blocks (fewer CSV files than read units), they are scored
    by tasks of their own.
    ``actors=K``: an actor pool of K sessions (one CPU each), blocks passed to them through the
    object store."""
    kwargs = {"onnx_bytes": model.onnx_bytes, "schema_json": model.schema.to_json(),
              "version": model.version, "id_column": id_column, "rejected_to": rejected_to,
              "prefix": prefix or f"{uuid.uuid4().hex[:12]}-"}
    if actors == 0:
        return dataset.map_batches(score_block, batch_format="pyarrow", batch_size=None,
                                   fn_kwargs={**kwargs, "batch_size": batch_size}, num_cpus=1)
    return dataset.map_batches(Scorer, batch_format="pyarrow", batch_size=batch_size,
                               fn_constructor_kwargs=kwargs,
                               compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)


def _parquet_files(fs: pafs.FileSystem, directory: str) -> set[str]:
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    return {i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")}


def _rows(fs: pafs.FileSystem, paths: set[str]) -> int:
    """Rows in the Parquet files ``paths``, from their footers."""
    total = 0
    for path in paths:
        with fs.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def check_locations(input_spec: str | list[str], output: str) -> None:
    """LocationError unless every input and the output are allowed locations
    (:mod:`raylane.locations`): the job's arguments come from whoever submits it."""
    for spec in [input_spec] if isinstance(input_spec, str) else input_spec:
        check_location("--input", spec)
    check_location("--output", output)


def check_actors(actors: int) -> None:
    """ValueError unless ``actors`` is 0 (tasks) or the cluster has a CPU left for reading
    besides ``actors`` sessions of one CPU each (with none left the read tasks never run and
    the job waits forever)."""
    if actors < 0:
        raise ValueError(f"--actors: expected 0 (tasks) or more, got {actors}")
    if actors == 0:
        return
    cpus = ray.cluster_resources().get("CPU", 0)
    if actors + 1 > cpus:
        raise ValueError(f"--actors: {actors} ONNX Runtime sessions take one CPU each and "
                         f"reading the input needs one more; the cluster has {cpus:g} CPUs")


def check_batch_size(batch_size: int) -> None:
    """ValueError unless ``batch_size`` is 1 to :data:`MAX_BATCH_SIZE` rows (a batch is held in
    a session's memory several times over: input, feeds, output)."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size: expected 1 to {MAX_BATCH_SIZE} rows, got {batch_size}")


def batch_predict(input_spec: str | list[str], output: str, model: RegisteredModel,
                  id_column: str | None = None, actors: int = 0,
                  batch_size: int = BATCH_SIZE) -> BatchResult:
    """Score the table ``input_spec`` names into ``output`` (a directory or URI)."""
    check_locations(input_spec, output)
    check_actors(actors)
    check_batch_size(batch_size)
    source = resolve(input_spec)
    if id_column and id_column not in (columns := source.columns()):
        raise ValueError(f"--id-column: column {id_column!r} is not in the input; columns "
                         f"are {columns}")
    fs, path = filesystem_for(output)
    path = path.rstrip("/")
    rejected_dir = f"{path}/{REJECTED}"
    fs.create_dir(rejected_dir, recursive=True)
    # the sessions may run on other nodes: a local output is named by its absolute path there
    rejected_to = f"{output.rstrip('/')}/{REJECTED}" if "://" in output else rejected_dir
    before = _parquet_files(fs, path)
    run = f"{uuid.uuid4().hex[:12]}-"
    unit = read_unit_bytes(source.total_bytes, cluster_cpus())
    score_dataset(read_dataset(source, read_unit_bytes=unit), model, id_column, actors,
                  batch_size, rejected_to=rejected_to, prefix=run
                  ).write_parquet(path, filesystem=fs)
    scored = _rows(fs, _parquet_files(fs, path) - before)
    rejected = _rows(fs, {p for p in _parquet_files(fs, rejected_dir)
                          if p.rpartition("/")[2].startswith(run)})
    return BatchResult(scored=scored, rejected=rejected, output=output, version=model.version)


__all__ = ["BATCH_SIZE", "PREDICTION", "BatchResult", "batch_predict", "check_actors",
           "check_batch_size", "check_locations", "score_dataset"]
