"""What continuous training reads: new labelled rows from files, directories, globs and URIs
(no Ray; the label join over the prediction log is in tests/test_ct_labels.py)."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import CREDIT_CSV

from raylane.data.read import DataError
from raylane.data.tables import read_tables


def credit() -> pd.DataFrame:
    return pd.read_csv(CREDIT_CSV)


def test_new_rows_from_a_directory_a_glob_and_a_file(tmp_path):
    frame = credit()
    (tmp_path / "d").mkdir()
    frame.iloc[:100].to_parquet(tmp_path / "d" / "a.parquet")
    frame.iloc[100:250].to_csv(tmp_path / "d" / "b.csv", index=False)
    (tmp_path / "d" / "notes.txt").write_text("not a table")
    assert len(read_tables(str(tmp_path / "d"), "--new-data")) == 250
    assert len(read_tables(str(tmp_path / "d" / "*.csv"), "--new-data")) == 150
    assert len(read_tables(f"file://{tmp_path / 'd' / 'a.parquet'}", "--new-data")) == 100
    with pytest.raises(DataError, match=r"no \.csv"):
        read_tables(str(tmp_path / "empty-*.csv"), "--new-data")
