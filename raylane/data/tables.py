"""Read every table a path, directory, glob or URI names (any fsspec filesystem): the newly
labelled rows continuous training adds, and the labels monitoring joins on prediction ids."""

from __future__ import annotations

import fsspec
import pandas as pd
import pyarrow.parquet as pq

from raylane.data.read import DataError

TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")


def table_files(spec: str) -> tuple[fsspec.AbstractFileSystem, list[str]]:
    """The table files a path, glob, directory or URI (any fsspec filesystem) names."""
    fs, _, paths = fsspec.get_fs_token_paths(spec)
    files: list[str] = []
    for path in paths:
        if fs.isdir(path):
            files += [p for p in fs.find(path) if p.endswith(TABLE_SUFFIXES)]
        else:
            files.append(path)
    return fs, sorted(files)


def read_tables(spec: str, what: str, dtype: dict | None = None) -> pd.DataFrame:
    """Every CSV/TSV/Parquet table under ``spec``, concatenated; ``what`` names the option in
    errors. ``dtype`` applies to CSV columns (e.g. ids read as strings)."""
    fs, files = table_files(spec)
    if not files:
        raise DataError(f"{what}: no .csv, .tsv or .parquet files at {spec!r}")
    frames = []
    for path in files:
        with fs.open(path, "rb") as f:
            if path.endswith((".parquet", ".pq")):
                frames.append(pq.read_table(f).to_pandas())
            else:
                frames.append(pd.read_csv(f, sep="\t" if path.endswith(".tsv") else ",",
                                          dtype=dtype))
    return pd.concat(frames, ignore_index=True)
