"""raylane/data/parquet.py: the footer-reader pool and the read-unit size of Ray Data's Parquet
listing."""

from __future__ import annotations

import os

import pytest
import ray.data

from raylane.data import parquet


@pytest.fixture()
def seen(monkeypatch):
    """What ray.data.read_parquet saw of the variable (Ray reads it when the call builds the
    listing), without a Ray: the call is recorded, not run."""
    calls: list[tuple[str | None, object]] = []

    def record(paths, **kwargs):
        calls.append((os.environ.get(parquet.FOOTER_READERS_ENV), paths))
        return "dataset"

    monkeypatch.delenv(parquet.FOOTER_READERS_ENV, raising=False)
    monkeypatch.setattr(ray.data, "read_parquet", record)
    return calls


def test_one_footer_reader_for_the_call_only(seen):
    assert parquet.read_parquet(["a.parquet"], columns=["x"]) == "dataset"
    assert seen == [("1", ["a.parquet"])]
    assert parquet.FOOTER_READERS_ENV not in os.environ  # the environment as it was


def test_the_operator_s_setting_wins(seen, monkeypatch):
    monkeypatch.setenv(parquet.FOOTER_READERS_ENV, "8")
    parquet.read_parquet("dir")
    assert seen == [("8", "dir")]
    assert os.environ[parquet.FOOTER_READERS_ENV] == "8"


def test_restored_when_the_read_fails(monkeypatch, tmp_path):
    monkeypatch.delenv(parquet.FOOTER_READERS_ENV, raising=False)

    def fail(paths, **kwargs):
        raise FileNotFoundError(paths)

    monkeypatch.setattr(ray.data, "read_parquet", fail)
    with pytest.raises(FileNotFoundError):
        parquet.read_parquet(str(tmp_path / "missing"))
    assert parquet.FOOTER_READERS_ENV not in os.environ


def test_ray_reads_the_variable_when_the_read_is_built():
    """The pin above only works while Ray builds the listing in read_parquet: Ray's indexer
    must read the variable in its constructor (a Ray upgrade that moved it would be caught)."""
    from ray.data._internal.datasource_v2.formats.parquet.footer_file_indexer import (
        FooterFileIndexer,
    )

    os.environ[parquet.FOOTER_READERS_ENV] = "3"
    try:
        indexer = FooterFileIndexer(ignore_missing_paths=False)
    finally:
        del os.environ[parquet.FOOTER_READERS_ENV]
    assert indexer._num_actors == 3


def test_a_read_unit_size_for_the_call_only(seen, monkeypatch):
    sizes: list[str | None] = []
    monkeypatch.setattr(ray.data, "read_parquet",
                        lambda paths, **kw: sizes.append(os.environ.get(parquet.READ_UNIT_ENV)))
    monkeypatch.delenv(parquet.READ_UNIT_ENV, raising=False)
    parquet.read_parquet("dir", read_unit_bytes=8 << 20)
    parquet.read_parquet("dir")
    assert sizes == [str(8 << 20), None]
    assert parquet.READ_UNIT_ENV not in os.environ
    monkeypatch.setenv(parquet.READ_UNIT_ENV, "1000")  # the operator's value wins
    parquet.read_parquet("dir", read_unit_bytes=8 << 20)
    assert sizes[-1] == "1000"


def test_ray_reads_the_read_unit_size_when_the_read_is_built():
    """Ray's Parquet datasource reads the read-unit size when read_parquet asks it for its
    partitioner (on the driver), so setting it for the call takes effect."""
    from ray.data._internal.datasource_v2.formats.parquet.parquet_datasource_v2 import (
        ParquetDatasourceV2,
    )

    source = ParquetDatasourceV2.__new__(ParquetDatasourceV2)
    os.environ[parquet.READ_UNIT_ENV] = str(3 << 20)
    try:
        packer = source.get_file_partitioner()
    finally:
        del os.environ[parquet.READ_UNIT_ENV]
    assert packer._cap == 3 << 20  # the most bytes one read task packs
