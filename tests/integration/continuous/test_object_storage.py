"""Continuous training's inputs and the monitor's report on object storage, as on Kubernetes
(`RAYLANE_NEW_DATA_URI=s3://...`): moto's S3 server stands in for the bucket, read and written
through fsspec (s3fs) exactly as local files are."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from support.paths import CREDIT_CSV
from support.s3 import KEYS, moto_server

from raylane.data.tables import read_tables
from raylane.locations import ENV_ALLOWED
from raylane.monitoring.performance import read_labels
from raylane.monitoring.report import MonitorReport

pytestmark = pytest.mark.slow
BUCKET = "ct-data"


@pytest.fixture()
def bucket(tmp_path, monkeypatch):
    """The bucket (a pyarrow filesystem on it), this process's AWS settings pointing at it and
    the operator's allowlist admitting it."""
    with moto_server(tmp_path, BUCKET) as (endpoint, fs):
        for name, value in {**KEYS, "AWS_ENDPOINT_URL": endpoint,
                            ENV_ALLOWED: f"s3://{BUCKET}"}.items():
            monkeypatch.setenv(name, value)
        yield fs


def _put(fs, key: str, data: bytes) -> None:
    with fs.open_output_stream(f"{BUCKET}/{key}") as out:
        out.write(data)


def test_new_labelled_rows_and_labels_read_from_s3(bucket, tmp_path):
    frame = pd.read_csv(CREDIT_CSV)
    first, second = frame.iloc[:300], frame.iloc[300:500]
    _put(bucket, "labelled/day-1.csv", first.to_csv(index=False).encode())
    second.to_parquet(tmp_path / "day-2.parquet", index=False)
    _put(bucket, "labelled/2026/day-2.parquet", (tmp_path / "day-2.parquet").read_bytes())
    _put(bucket, "labelled/_SUCCESS", b"")  # a writer's marker: not a table
    rows = read_tables(f"s3://{BUCKET}/labelled/", "--new-data")
    expected = pd.concat([second, first], ignore_index=True)  # sorted keys: 2026/ first
    pd.testing.assert_frame_equal(rows, expected, check_dtype=False)

    labels = pd.DataFrame({"prediction_id": ["0001", "0002"], "label": ["good", "bad"]})
    _put(bucket, "labels/batch.csv", labels.to_csv(index=False).encode())
    read = read_labels(f"s3://{BUCKET}/labels/")
    assert read["prediction_id"].tolist() == ["0001", "0002"]  # ids stay strings


def test_the_monitors_report_is_written_to_s3(bucket):
    report = MonitorReport(decision="retrain", reasons=["2 of 13 columns drifted"], run_id="r1",
                           body={"rows": 1200})
    report.write(f"s3://{BUCKET}/reports/credit.json")
    with bucket.open_input_stream(f"{BUCKET}/reports/credit.json") as f:
        written = json.loads(f.read())
    assert written["decision"] == "retrain" and written["rows"] == 1200
