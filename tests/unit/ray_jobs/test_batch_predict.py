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
