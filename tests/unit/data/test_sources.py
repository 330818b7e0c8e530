"""``data.path`` as a file, a directory, a glob or a list: the files it names, one format, a
digest of the listing, and the small-data path reading them whole."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from raylane.data.read import DataError
from raylane.data.sources import read_frame, resolve


@pytest.fixture
def shards(tmp_path):
    frame = pd.DataFrame({"x": range(30), "y": ["a", "b", "c"] * 10})
    (tmp_path / "t" / "sub").mkdir(parents=True)
    for i in range(3):
        part = frame.iloc[i * 10:(i + 1) * 10]
        where = tmp_path / "t" / ("sub" if i == 2 else "") / f"part-{i}.parquet"
        part.to_parquet(where)
    (tmp_path / "t" / "_SUCCESS").write_text("")
    return tmp_path / "t", frame


def test_a_directory_a_glob_and_a_list_name_the_same_files(shards):
    root, frame = shards
    by_dir = resolve(str(root))
    assert [os.path.basename(p) for p in by_dir.paths] == [
        "part-0.parquet", "part-1.parquet", "part-2.parquet"]
    assert resolve(str(root / "**" / "*.parquet")).paths == by_dir.paths
    listed = resolve([str(root / "part-0.parquet"), str(root / "sub")])
    assert len(listed.paths) == 2 and listed.format == "parquet"
    got = read_frame(str(root)).sort_values("x").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, frame)


def test_the_digest_follows_the_listing(shards):
    root, _ = shards
    before = resolve(str(root)).digest()
    assert resolve(str(root)).digest() == before
    pd.DataFrame({"x": [1], "y": ["a"]}).to_parquet(root / "part-9.parquet")
    assert resolve(str(root)).digest() != before


def test_bad_paths_name_data_path(shards, tmp_path):
    root, _ = shards
    with pytest.raises(DataError, match=r"data\.path: file not found"):
        resolve(str(tmp_path / "nope.parquet"))
    with pytest.raises(DataError, match=r"data\.path: no \.csv"):
        resolve(str(root / "*.csv"))
    pd.DataFrame({"x": [1]}).to_csv(root / "other.csv", index=False)
    with pytest.raises(DataError, match="mix formats"):
        resolve(str(root))
    with pytest.raises(DataError, match=r"got \[\]"):
        resolve([])


@pytest.mark.parametrize("suffix", ["parquet", "csv", "tsv"])
def test_columns_come_from_the_first_files_footer_or_header(tmp_path, suffix):
    frame = pd.DataFrame({"row_id": ["a", "b"], "x": [1.5, 2.0], "y": ["p", "q"]})
    path = tmp_path / f"t.{suffix}"
    if suffix == "parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == "tsv" else ",")
    assert resolve(str(path)).columns() == ["row_id", "x", "y"]
