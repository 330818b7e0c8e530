"""The batch-scoring job refuses inputs, outputs and tracking servers outside the operator's
allowlist before it fetches a model or starts Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from ray_jobs import batch_predict as job
from raylane.batch.job import batch_predict
from raylane.locations import ENV_ALLOWED, LocationError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _project_dir(monkeypatch):
    monkeypatch.chdir(ROOT)
    for name in (ENV_ALLOWED, "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("args", "field"), [
    (["--input", "/etc/passwd", "--output", "scores"], "--input"),
    (["--input", "data/credit.csv", "s3://someone-elses-bucket/x.parquet", "--output", "scores"],
     "--input"),
    (["--input", "data/credit.csv", "--output", "/var/lib/elsewhere"], "--output"),
    (["--input", "data/credit.csv", "--output", "s3://someone-elses-bucket/out"], "--output"),
    (["--input", "data/credit.csv", "--output", "scores", "--tracking-uri",
      "http://attacker.example/"], "--tracking-uri"),
])
def test_a_location_outside_the_allowlist_exits_2_naming_the_argument(args, field, capsys):
    code = job.main(["--model-uri", "models:/credit@champion", *args])
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: {field}:" in err
    assert not ray.is_initialized()  # refused before Ray started or a model was fetched


def test_the_library_function_checks_too():
    with pytest.raises(LocationError, match="--output"):
        batch_predict("data/credit.csv", "s3://someone-elses-bucket/out", model=None)


def test_an_allowlisted_bucket_is_accepted(monkeypatch):
    monkeypatch.setenv(ENV_ALLOWED, "s3://raylane-jobs")
    from raylane.batch.job import check_locations

    check_locations(["s3://raylane-jobs/batch/input/"], "s3://raylane-jobs/batch/scores")


@pytest.mark.parametrize("size", ["0", "-5", str((1 << 20) + 1)])
def test_a_batch_size_out_of_bounds_exits_2_naming_it(size, capsys):
    code = job.main(["--model-uri", "models:/credit@champion", "--input", "data/credit.csv",
                     "--output", "scores", "--batch-size", size])
    assert code == 2
    err = capsys.readouterr().err
    assert f"error: --batch-size: expected 1 to {1 << 20} rows, got {size}" in err
    assert not ray.is_initialized()


def test_read_units_give_every_cpu_several_tasks_within_bounds():
    from raylane.batch.job import (
        MAX_READ_UNIT_BYTES,
        MIN_READ_UNIT_BYTES,
        READ_TASKS_PER_CPU,
        read_unit_bytes,
    )

    table = 140 << 20  # 16 files of a 10M-row table
    assert table / read_unit_bytes(table, 2) == pytest.approx(2 * READ_TASKS_PER_CPU, rel=1e-6)
    assert read_unit_bytes(table, 16) < read_unit_bytes(table, 2)  # more CPUs, smaller units
    assert read_unit_bytes(1 << 20, 2) == MIN_READ_UNIT_BYTES  # a small table: a few tasks
    assert read_unit_bytes(1 << 40, 64) == MAX_READ_UNIT_BYTES  # never above Ray's own
    assert read_unit_bytes(table, 0) == read_unit_bytes(table, 1)  # no CPU listed yet


def test_a_csv_source_gets_one_block_per_read_unit():
    from raylane.batch.job import READ_TASKS_PER_CPU, read_unit_bytes
    from raylane.data.distributed import csv_blocks

    one_file = 138 << 20  # one CSV file of 2M rows: Ray reads it with one task
    assert csv_blocks(one_file, read_unit_bytes(one_file, 2)) == 2 * READ_TASKS_PER_CPU
    assert csv_blocks(1000, read_unit_bytes(1000, 2)) == 1  # small: one fused task
    assert csv_blocks(10, 3) == 4 and csv_blocks(0, 3) == 1 and csv_blocks(5, 0) == 5
