"""What ``data.path`` names: one file, a directory, a glob or a list of them, local or any
pyarrow/fsspec URI (s3://, gs://, hdfs://, memory://...), resolved to a list of table files on one
filesystem, with a digest of the listing.

pyarrow's filesystems come first (S3 reads ``AWS_ENDPOINT_URL`` and the usual AWS variables, as the
prediction log does); a scheme pyarrow does not know goes through fsspec, wrapped as a pyarrow
filesystem so that Ray Data and pyarrow read it alike.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylane.data.read import DataError, read_table

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".tsv")
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class TableFile:
    path: str  # as the filesystem names it (no scheme)
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Source:
    """The table files one ``data.path`` names, all of one format, on one filesystem."""

    spec: str  # the config's value, as text (a list joined with ", ")
    filesystem: pafs.FileSystem
    files: tuple[TableFile, ...]
    format: str  # "parquet", "csv" or "tsv"

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def csv_parse_options(self) -> pacsv.ParseOptions:
        """How a CSV or TSV file of this source is split into fields."""
        return pacsv.ParseOptions(delimiter="\t" if self.format == "tsv" else ",")

    def csv_schema(self) -> pa.Schema:
        """The first CSV/TSV file's columns with the types of its first rows."""
        with self.filesystem.open_input_stream(self.paths[0]) as f:
            return pacsv.open_csv(f, parse_options=self.csv_parse_options()).schema

    def columns(self) -> list[str]:
        """The first file's column names, from its Parquet footer or CSV header: no data read,
        no Ray Data execution started."""
        if self.format == "parquet":
            with self.filesystem.open_input_file(self.paths[0]) as f:
                return pq.read_schema(f).names
        return self.csv_schema().names

    def digest(self) -> str:
        """A short hash of the listing: every file's path, size and modification time. It
        changes when a file is added, removed or rewritten, without reading any data."""
        listing = [[f.path, f.size, f.mtime_ns] for f in self.files]
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


def describe(spec: str | Sequence[str]) -> str:
    return spec if isinstance(spec, str) else ", ".join(spec)


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem of ``uri`` and the path on it (local paths made absolute)."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path.rstrip("/") or path  # object stores refuse a key ending in "/"
    except (ValueError, OSError):  # a scheme pyarrow does not know (ArrowInvalid)
        pass
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        raise DataError(f"data.path: no filesystem for {uri!r}: {exc}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/") or path


def _expand(fs: pafs.FileSystem, path: str, spec: str) -> list[pafs.FileInfo]:
    """The files one entry names: itself, every table file under a directory, or a glob's
    matches (``**`` crosses directories)."""
    first_glob = min((path.find(c) for c in _GLOB_CHARS if c in path), default=-1)
    if first_glob >= 0:
        base = path[:first_glob].rpartition("/")[0] or "/"
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"data.path: cannot list {spec!r}: {exc}") from None
        pattern = path.replace("**/", "*")
        return [i for i in infos if i.type == pafs.FileType.File
                and fnmatch.fnmatchcase(i.path, pattern)]
    try:
        info = fs.get_file_info(path)
    except OSError as exc:
        raise DataError(f"data.path: cannot read {spec!r}: {exc}") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"data.path: file not found: {spec!r}")
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        return [i for i in infos if i.type == pafs.FileType.File
                and i.path.endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)
                and not os.path.basename(i.path).startswith(("_", "."))]
    return [info]


def _format(path: str) -> str | None:
    if path.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if path.endswith(".csv"):
        return "csv"
    if path.endswith(".tsv"):
        return "tsv"
    return None


def resolve(spec: str | Sequence[str]) -> Source:
    """Every table file ``spec`` names; DataError (naming ``data.path``) when none, when they
    mix formats or filesystems, or when a file is neither CSV/TSV nor Parquet."""
    entries = [spec] if isinstance(spec, str) else list(spec)
    if not entries:
        raise DataError("data.path: expected a file, directory, glob or a list of them; got []")
    filesystem = None
    files: dict[str, TableFile] = {}
    for entry in entries:
        fs, path = filesystem_for(entry)
        if filesystem is not None and fs.type_name != filesystem.type_name:
            raise DataError(f"data.path: every entry must be on one filesystem; {entry!r} is on "
                            f"{fs.type_name}, an earlier one on {filesystem.type_name}")
        filesystem = filesystem or fs
        for info in _expand(fs, path, entry):
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            files[info.path] = TableFile(info.path, int(info.size or 0), int(mtime))
    if not files:
        raise DataError(f"data.path: no .csv, .tsv or .parquet files at {describe(spec)!r}")
    formats = {p: _format(p) for p in files}
    unknown = [p for p, f in formats.items() if f is None]
    if unknown:
        raise DataError(f"data.path: expected .csv, .tsv or .parquet files, got {unknown[:3]}")
    kinds = set(formats.values())
    if len(kinds) > 1:
        raise DataError(f"data.path: the files mix formats ({sorted(kinds)}); use one format")
    assert filesystem is not None
    return Source(describe(spec), filesystem, tuple(files[p] for p in sorted(files)),
                  kinds.pop())  # type: ignore[arg-type]


def is_single_file(spec: str | Sequence[str]) -> bool:
    """A plain local file path (no list, glob, directory or URI): read as before. URIs go
    through :func:`resolve` (pyarrow's S3 needs no s3fs)."""
    if not isinstance(spec, str) or any(c in spec for c in _GLOB_CHARS) or "://" in spec:
        return False
    return not os.path.isdir(spec)


def read_frame(spec: str | Sequence[str]) -> pd.DataFrame:
    """The whole table ``spec`` names, in this process (the small-data path): one file as
    :func:`raylane.data.read.read_table` reads it, several concatenated in name order."""
    if is_single_file(spec):
        return read_table(spec)  # type: ignore[arg-type]
    source = resolve(spec)
    frames = []
    for path in source.paths:
        try:
            if source.format == "parquet":
                frames.append(pq.read_table(path, filesystem=source.filesystem).to_pandas())
            else:
                with source.filesystem.open_input_stream(path) as f:
                    frames.append(pd.read_csv(f, sep="\t" if source.format == "tsv" else ","))
        except (OSError, ValueError) as exc:
            raise DataError(f"data.path: cannot read {path!r}: {exc}") from exc
    return pd.concat(frames, ignore_index=True)
