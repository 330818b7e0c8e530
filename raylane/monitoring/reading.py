"""Read a window of the prediction log with Ray Data: the rows one model version served.

The log (``raylane.serving.prediction_log``) is a directory of Parquet files with ``timestamp``,
``model_name``, ``model_version``, ``input`` (a struct of the raw columns), ``prediction``,
``probabilities`` (classifiers) and, when the service assigns them, ``prediction_id``. The
directory may be a local path or any fsspec URI (``s3://``, ``gs://``, ``memory://``...). Ray Data
lists and reads the files in parallel tasks (on every node of a cluster), filters rows there, and
only the selected columns of the selected rows reach the driver. A log small enough that starting
those tasks costs more than the read (:data:`IN_PROCESS_MAX_BYTES`) is read file by file in the
calling process instead (:func:`window_tables`), with the same filter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from raylane.data.parquet import read_parquet

log = logging.getLogger(__name__)
INPUT_PREFIX = "input."
OUTPUT_COLUMNS = ("timestamp", "prediction", "probabilities", "prediction_id")
# Up to this much Parquet the window is read in the calling process: one process reads and
# counts the log at ~14 MB/s of Parquet (1M logged rows, 7.4 MiB, in 0.56 s on an idle 2-core
# machine), and Ray Data's tasks take 2.5 s warm to schedule and run the same, so below ~32 MiB
# one process finishes first.
IN_PROCESS_MAX_BYTES = 32 * 2**20


def filesystem_for(uri: str):
    """``(pyarrow filesystem or None, path)``: None lets Ray pick for plain paths; URIs (``file://``
    too) go through fsspec, which reads its usual settings (``AWS_ENDPOINT_URL``, credentials)."""
    if "://" not in uri:
        return None, uri
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, path = fsspec.core.url_to_fs(uri)
    return PyFileSystem(FSSpecHandler(fs)), path


def as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC; a naive time is taken to be UTC already."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _flatten(batch: pa.Table, features: list[str] | None) -> pa.Table:
    """``input.<col>`` struct fields (``features``, or all of them) as top-level columns, plus
    the outputs the log has."""
    flat = batch.flatten()
    if features is None:
        features = [c.removeprefix(INPUT_PREFIX) for c in flat.column_names
                    if c.startswith(INPUT_PREFIX)]
    names = [f"{INPUT_PREFIX}{f}" for f in features]
    missing = [n for n in names if n not in flat.column_names]
    if missing:
        raise ValueError(f"prediction log lacks input columns {missing}: logged by another model?")
    outputs = [c for c in OUTPUT_COLUMNS if c in flat.column_names]
    return pa.table([flat.column(n) for n in names] + [flat.column(c) for c in outputs],
                    names=features + outputs)


def read_window(
    predictions: str, model_name: str, model_version: str | None, features: list[str] | None, *,
    since: datetime | None = None, until: datetime | None = None, max_rows: int | None = None,
    seed: int = 0, in_process_max_bytes: int = IN_PROCESS_MAX_BYTES,
) -> pa.Table:
    """The logged rows of ``model_name`` version ``model_version`` (None: every version) with
    ``since <= timestamp < until``, as one table of the feature columns (None: all logged) and
    the outputs; sampled down to ``max_rows`` (with ``seed``) when given. An empty log gives an
    empty table. Read in this process when the log is at most ``in_process_max_bytes``."""
    import ray

    files = log_files(predictions)
    if not files.paths:
        return _empty(features)
    if files.size <= in_process_max_bytes:
        tables = list(window_tables(files, model_name, model_version, features, since=since,
                                    until=until))
    else:
        ds = window_dataset(predictions, model_name, model_version, features, since=since,
                            until=until)
        if ds is None:
            return _empty(features)
        tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    if not tables:
        return _empty(features)
    table = pa.concat_tables(tables, promote_options="permissive")
    if max_rows is not None and table.num_rows > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(table.num_rows, max_rows, replace=False))
        table = table.take(pa.array(idx))
    return table


def ensure_ray() -> None:
    """Ray for Ray Data, started only when a window is read with it: under `ray job submit`
    RAY_ADDRESS names the cluster; run directly, a local Ray starts (never a stray cluster)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS", "local"))


def window_dataset(
    predictions: str, model_name: str, model_version: str | None, features: list[str] | None, *,
    since: datetime | None = None, until: datetime | None = None,
):
    """The window's rows as a lazy Ray Dataset (flattened: feature columns and outputs), None
    when there is no log to read."""
    from ray.data.expressions import col, lit

    ensure_ray()
    filesystem, path = filesystem_for(predictions)
    try:
        ds = read_parquet(path, filesystem=filesystem, file_extensions=["parquet"],
                          partitioning=None)
    except (FileNotFoundError, ValueError) as exc:
        log.warning("prediction log %s: nothing to read (%s)", predictions, exc)
        return None
    predicate = col("model_name") == lit(model_name)
    if model_version is not None:
        predicate = predicate & (col("model_version") == lit(str(model_version)))
    if since is not None:
        predicate = predicate & (col("timestamp") >= lit(as_utc(since)))
    if until is not None:
        predicate = predicate & (col("timestamp") < lit(as_utc(until)))
    return ds.filter(expr=predicate).map_batches(
        _flatten, fn_kwargs={"features": features}, batch_format="pyarrow", batch_size=None)


@dataclass(frozen=True)
class LogFiles:
    """The prediction log's Parquet files and the filesystem that reads them."""

    filesystem: pafs.FileSystem
    paths: list[str]
    size: int


def log_files(predictions: str) -> LogFiles:
    """List the log's ``*.parquet`` files (as Ray Data's reader selects them: other files, such
    as a writer's temporary ones, are left out); none when the log does not exist yet."""
    filesystem, path = filesystem_for(predictions)
    if filesystem is None:
        filesystem, path = pafs.LocalFileSystem(), str(path)
    top = filesystem.get_file_info(path)
    if top.type == pafs.FileType.NotFound:
        infos = []
    elif top.type == pafs.FileType.File:
        infos = [top]
    else:
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted((i for i in infos if i.type == pafs.FileType.File
                    and i.path.endswith(".parquet")), key=lambda i: i.path)
    return LogFiles(filesystem, [i.path for i in files], sum(i.size or 0 for i in files))


def window_tables(
    files: LogFiles, model_name: str, model_version: str | None, features: list[str] | None, *,
    since: datetime | None = None, until: datetime | None = None,
) -> Iterator[pa.Table]:
    """The window's rows read in this process one file at a time, flattened as
    :func:`window_dataset`'s blocks are; files without a row of the window give nothing."""
    import pyarrow.parquet as pq

    predicate = pc.field("model_name") == model_name
    if model_version is not None:
        predicate = predicate & (pc.field("model_version") == str(model_version))
    if since is not None:
        predicate = predicate & (pc.field("timestamp") >= pa.scalar(as_utc(since)))
    if until is not None:
        predicate = predicate & (pc.field("timestamp") < pa.scalar(as_utc(until)))
    for path in files.paths:
        table = pq.read_table(path, filesystem=files.filesystem, filters=predicate,
                              partitioning=None)
        if table.num_rows:
            yield _flatten(table, features)


def _empty(features: list[str] | None) -> pa.Table:
    return pa.table({f: pa.array([], pa.null()) for f in features or []})


def time_range(table: pa.Table) -> tuple[datetime | None, datetime | None]:
    """The first and last timestamp in ``table`` (None when it is empty)."""
    if table.num_rows == 0 or "timestamp" not in table.column_names:
        return None, None
    lo, hi = pc.min_max(table.column("timestamp")).values()
    return lo.as_py(), hi.as_py()
