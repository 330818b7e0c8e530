"""Score a file: reading uploads, records for the service, finding the rows it rejects."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from raylane.console.scoring import (
    MAX_UPLOAD_MB,
    UnreadableFile,
    missing_columns,
    read_table,
    records,
    score,
    summary,
    to_download,
)
from raylane.console.serving import Answer, Metadata, Rejection

ROOT = Path(__file__).resolve().parents[3]

META = Metadata(
    name="m", version="3", alias="champion", model_uri="models:/m@champion", run_id=None,
    task="classification", target="y",
    inputs=[{"name": "x", "kind": "numeric", "dtype": "float64", "nullable": True},
            {"name": "c", "kind": "categorical", "dtype": "str", "nullable": True}],
    class_labels=["no", "yes"],
)


class FakeService:
    """Answers like /predict: the first row whose ``x`` is a string is rejected, naming the
    row (or not, with ``name_row=False``); counts requests."""

    def __init__(self, name_row: bool = True):
        self.name_row = name_row
        self.requests = 0
        self.sizes: list[int] = []

    def __call__(self, batch: list[dict]) -> Answer | Rejection:
        self.requests += 1
        self.sizes.append(len(batch))
        for i, row in enumerate(batch):
            if isinstance(row["x"], str):
                where = f" (row {i})" if self.name_row else ""
                return Rejection(400, f"column 'x': expected a number or null, got a string"
                                      f"{where}", "x", "wrong_type")
        return Answer("m", "3", ["yes" if (r["x"] or 0) > 0 else "no" for r in batch],
                      [f"{id(r):032x}"[-32:] for r in batch],
                      [[0.2, 0.8] if (r["x"] or 0) > 0 else [0.9, 0.1] for r in batch],
                      ["no", "yes"])


def frame(n: int, bad: list[int]) -> pd.DataFrame:
    xs: list = [float(i % 3 - 1) for i in range(n)]
    for b in bad:
        xs[b] = "oops"
    return pd.DataFrame({"x": xs, "c": ["a"] * n, "extra": range(n)})


@pytest.mark.parametrize("name_row", [True, False])
def test_rejected_rows_are_found_and_the_rest_scored(name_row):
    bad = [3, 4, 50, 99]
    service = FakeService(name_row)
    result = score(frame(100, bad), META, service, batch_rows=32)
    assert result.rejected["row"].tolist() == bad
    assert set(result.rejected["reason"]) == {"wrong_type"}
    assert len(result.frame) == 96 and not set(bad) & set(result.frame.index)
    assert result.frame["extra"].tolist() == [i for i in range(100) if i not in bad]
    assert list(result.frame.columns[-5:]) == ["prediction", "probability_no", "probability_yes",
                                               "prediction_id", "model_version"]
    assert result.requests == service.requests
    # 4 batches; a named row costs 2 requests (it alone, then the rest again), bisection about
    # 2 log2(batch) per bad row: either way far fewer than one request per row
    assert service.requests == (12 if name_row else 32)


def test_progress_reaches_every_row_and_batches_are_bounded():
    seen = []
    service = FakeService()
    score(frame(70, []), META, service, batch_rows=32, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(32, 70), (64, 70), (70, 70)]
    assert service.sizes == [32, 32, 6]


def test_records_turn_cells_into_json():
    df = pd.DataFrame({"x": ["1", "2.5", "", None, "abc", float("nan")],
                       "c": ["a", None, "b", "c", "d", "e"]})
    out = records(df, META)
    assert [r["x"] for r in out] == [1, 2.5, None, None, "abc", None]
    assert out[1]["c"] is None


def test_read_table_csv_parquet_and_errors():
    df = pd.DataFrame({"x": [1.0, 2.0], "c": ["a", "b"]})
    buf = io.BytesIO()
    df.to_parquet(buf)
    assert read_table("t.parquet", buf.getvalue()).equals(df)
    assert read_table("t.csv", df.to_csv(index=False).encode()).shape == (2, 2)
    with pytest.raises(UnreadableFile, match=r"expected a \.csv or \.parquet"):
        read_table("t.xlsx", b"x")
    with pytest.raises(UnreadableFile, match="not a readable table"):
        read_table("t.parquet", b"not parquet")
    with pytest.raises(UnreadableFile, match="at most 1 "):
        read_table("t.csv", df.to_csv(index=False).encode(), max_rows=1)
    assert missing_columns(df[["c"]], META) == ["x"]


def test_summary_and_download():
    result = score(frame(9, []), META, FakeService())
    counts = summary(result, "classification").set_index("class")["rows"].to_dict()
    assert counts == {"no": 6, "yes": 3}
    data, name, mime = to_download(result.frame, "people.csv")
    assert name == "people_scored.csv" and mime == "text/csv"
    assert len(pd.read_csv(io.BytesIO(data))) == 9
    data, name, _ = to_download(result.frame, "people.parquet")
    assert name == "people_scored.parquet"
    assert pd.read_parquet(io.BytesIO(data))["prediction"].tolist() == result.frame[
        "prediction"].tolist()
    result.frame["prediction"] = [float(i) for i in range(9)]
    hist = summary(result, "regression")
    assert hist["rows"].sum() == 9 and len(hist) == 20


def test_limits_are_checked_before_the_file_is_parsed(tmp_path):
    """A CSV is read no further than the row cap (a broken tail past it is never parsed), a
    Parquet file's row count comes from its footer (its damaged data pages are never read),
    and a file over the size cap is refused unread."""
    good = pd.DataFrame({"x": range(50), "c": ["a"] * 50}).to_csv(index=False).encode()
    broken_tail = good + b'1,"never closed\n' * 3
    with pytest.raises(UnreadableFile, match="over 10 rows; the console scores at most 10"):
        read_table("t.csv", broken_tail, max_rows=10)
    table = pd.DataFrame({"x": [float(i) for i in range(5000)],
                          "c": [f"value-{i}" for i in range(5000)]})
    path = tmp_path / "t.parquet"
    table.to_parquet(path, compression="snappy", row_group_size=1000)
    data = bytearray(path.read_bytes())
    data[100:len(data) // 2] = b"\xff" * (len(data) // 2 - 100)  # the data pages, not the footer
    with pytest.raises(UnreadableFile, match="5,000 rows; the console scores at most 1,000"):
        read_table("t.parquet", bytes(data), max_rows=1000)
    with pytest.raises(UnreadableFile, match=r"the console takes files up to 0\.001 MB"):
        read_table("t.csv", good * 100, max_mb=0.001)


def test_the_upload_cap_is_streamlits_too():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB
    assert "max_upload_size=MAX_UPLOAD_MB" in (ROOT / "console" / "pages" / "score_file.py"
                                               ).read_text()
