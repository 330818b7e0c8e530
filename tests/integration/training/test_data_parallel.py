"""Past one node, on a real local Ray and a real S3-compatible server (moto).

Tables read with Ray Data (raylane/data/distributed.py): a directory, glob or list of shards,
local or s3://, gives the schema, holdout rows and training statistics the small-data path gives
for the same table. Data-parallel trials (tune.workers_per_trial: 2): ASHA stops a weak trial,
no placement group is left after the search, Tune's and Ray Train's state (the trials'
checkpoints) go to the S3 server, the best trial's booster is registered through
the same publish path and its graph reproduces it, on a Ray without a dashboard (so without
the State API Ray Train's placement-group cleaner needs); a cluster too small for one trial is
refused with an error naming the settings."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from pyarrow.fs import FileSelector
from support.environ import restored_environ
from support.paths import CREDIT_CSV
from support.s3 import KEYS, moto_server

from raylane.config import ConfigError, parse_config
from raylane.data.distributed import DatasetOptions, load_distributed, to_pandas
from raylane.data.read import DataError
from raylane.data.splits import HOLDOUT, TRAIN
from raylane.training.job import load_data, run_pipeline

pytestmark = pytest.mark.slow

BUCKET = "raylane-tables"
@pytest.fixture(scope="module")
def s3_and_ray(tmp_path_factory):
    """A moto S3 server with a bucket, then a local Ray whose workers see its endpoint."""
    with moto_server(tmp_path_factory.mktemp("moto"), BUCKET) as (endpoint, fs), \
            restored_environ():
        # the operator's allowlist: the test bucket and the temp dir
        allowed = f"s3://{BUCKET}/ {tempfile.gettempdir()}"
        os.environ.update({**KEYS, "AWS_ENDPOINT_URL": endpoint,
                           "RAYLANE_ALLOWED_LOCATIONS": allowed})
        # No dashboard, so no State API: Ray Train's own placement-group cleaner cannot see a
        # stopped trial's controller die, and the search must still free the workers' CPUs of
        # the trials ASHA stops (the job removes their groups itself) to finish.
        ray.init(address="local", num_cpus=6, include_dashboard=False, log_to_driver=False)
        try:
            yield fs
        finally:
            ray.shutdown()


def _config(path, **data):
    return parse_config({
        "data": {"path": path, "target": "Status", "task": "classification", **data},
        "model": {"family": "xgboost"}, "mlflow": {"registered_model": "m"}, "seed": 7})


def _options(config) -> DatasetOptions:
    dc = config.data
    return DatasetOptions(path=dc.path, target=dc.target, task=dc.task,
                          valid_fraction=dc.valid_fraction, holdout_fraction=dc.holdout_fraction,
                          key_columns=config.judging.key_columns,
                          hash_seed=config.judging.hash_seed)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    frame = pd.read_csv(CREDIT_CSV)
    root = tmp_path_factory.mktemp("credit")
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 4)):
        frame.iloc[part].to_parquet(root / f"part-{i}.parquet", index=False)
    return frame, root


def test_parquet_shards_match_the_small_data_path(s3_and_ray, shards):
    _, root = shards
    small_frame, small = load_data(_config(str(CREDIT_CSV)))
    big = load_distributed(_options(_config(str(root))))
    assert big.schema == small.schema  # kinds, dtypes, categories, nullability, labels
    assert big.pos_label == small.pos_label
    rows = to_pandas(big.dataset)  # NumPy dtypes, NaN for missing, as the small path has
    assert len(rows) == len(small_frame)
    hold = rows[rows["__split"] == HOLDOUT]
    assert big.rows["holdout"] == len(small.holdout.y) == len(hold)
    # the same holdout rows: both hash each row's key
    key = small.schema.feature_names
    def keys(frame: pd.DataFrame) -> list[str]:
        return sorted(frame[key].apply(lambda r: "|".join(map(str, r)), axis=1))

    small_hold, big_hold = keys(small.holdout.X), keys(hold)
    assert small_hold == big_hold
    train = rows[rows["__split"] == TRAIN]
    for name in small.schema.numeric:  # exact here: these columns hold integers or cents
        assert big.stats.medians[name] == pytest.approx(np.nanmedian(train[name]), abs=1e-9)
    for name in small.schema.categorical:
        assert big.stats.categories[name] == sorted(train[name].unique())


def test_csv_glob_and_s3_read_the_same_table(s3_and_ray, shards, tmp_path):
    fs = s3_and_ray
    frame, root = shards
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[part].to_csv(tmp_path / f"p{i}.csv", index=False)
        with fs.open_output_stream(f"{BUCKET}/credit/p{i}.parquet") as out:
            pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False), out)
    local = load_distributed(_options(_config(str(root))))
    by_csv = load_distributed(_options(_config(str(tmp_path / "p*.csv"))))
    by_s3 = load_distributed(_options(_config(f"s3://{BUCKET}/credit/")))
    for other in (by_csv, by_s3):
        assert other.rows == local.rows
        assert other.schema == local.schema
        assert other.stats.medians == local.stats.medians
    assert by_s3.source.format == "parquet" and len(by_s3.source.paths) == 3
    with pytest.raises(DataError, match=r"data\.path: no \.csv"):
        load_distributed(_options(_config(f"s3://{BUCKET}/credit/*.csv")))


@pytest.fixture(scope="module")
def trained(s3_and_ray, shards, tmp_path_factory):
    """The data-parallel job over the credit shards: 2 trials of 2 workers each, one after the
    other, ASHA."""
    _, root = shards
    tmp = tmp_path_factory.mktemp("job")
    config = parse_config({
        "data": {"path": str(root), "target": "Status", "task": "classification"},
        "model": {"family": "xgboost", "report_every": 5,
                  "params": {"tree_method": "hist", "n_jobs": 1, "n_estimators": 30,
                             "learning_rate": 0.3},
                  # trees, then stumps: the stump trial reaches each rung after the tree
                  # trial and is below ASHA's cutoff there
                  "search_space": {"max_depth": {"type": "grid", "values": [4, 1]}}},
        "tune": {"num_samples": 1, "max_concurrent_trials": 1, "workers_per_trial": 2,
                 "cpus_per_trial": 1, "search_alg": "random", "metric": "roc_auc",
                 "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
                 # Tune's and Ray Train's state on object storage, as the RayJob keeps it
                 "storage_path": f"s3://{BUCKET}/ray_results"},
        "mlflow": {"registered_model": "scale", "experiment": "scale",
                   "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
        "gates": {"min_holdout": {"roc_auc": 0.75}},
        "seed": 7,
    })
    return config, run_pipeline(config)


def test_a_cluster_too_small_for_one_trial_is_refused_before_reading(s3_and_ray, tmp_path):
    config = parse_config({
        "data": {"path": str(tmp_path / "nothing-here"), "target": "Status"},
        "model": {"family": "xgboost"},
        # 3 workers x 2 CPUs and the trial function's 0.01: more than the cluster's 6
        "tune": {"workers_per_trial": 3, "cpus_per_trial": 2},
        "mlflow": {"registered_model": "m", "tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"}})
    with pytest.raises(ConfigError, match=r"3 x 2 = 6 CPUs.*cluster has 6 CPUs"):
        run_pipeline(config)  # the path does not exist: the error comes before any read


def test_data_parallel_search_stops_a_trial_and_registers_the_booster(trained, s3_and_ray):
    from ray.util import placement_group_table

    _, result = trained
    trials = result.search.trials
    assert len(trials) == 2
    assert (trials["steps"] < 30).any(), trials  # ASHA stopped the stump trial early
    assert (trials["steps"] == 30).sum() == 1
    # every trial, stopped or finished, gave its workers' placement group back
    left = {k: v for k, v in placement_group_table().items() if v["state"] == "CREATED"}
    assert not left, left
    assert result.parity.passed and result.parity.rows > 500
    assert result.evaluation.holdout["roc_auc"] > 0.75
    assert result.decision.promoted and result.version == "1"
    # the search's state and the trials' checkpoints went to the bucket (the model came from it)
    stored = [f.path for f in s3_and_ray.get_file_info(
        FileSelector(f"{BUCKET}/ray_results", recursive=True))]
    assert any(p.endswith("/tuner.pkl") for p in stored), stored[:20]
    assert any("/train/trial-" in p and p.endswith("/model.ubj") for p in stored), stored[:40]


@pytest.mark.parametrize(("actors", "to_bucket"), [(0, True), (1, False)],
                         ids=["tasks-to-s3", "actor-pool-to-local"])
def test_batch_scoring_scores_good_rows_and_rejects_bad_ones(trained, s3_and_ray, tmp_path,
                                                             actors, to_bucket):
    """Both ways of scoring, each to one kind of output: the sessions in Ray's workers write
    the refused rows to the bucket or the directory themselves."""
    from raylane.batch.job import batch_predict
    from raylane.data.sources import filesystem_for
    from raylane.model.onnx_model import OnnxModel
    from raylane.model.store import load_registered_model

    config, _ = trained
    model = load_registered_model("models:/scale@champion", config.tracking_uri)
    rows = pd.read_csv(CREDIT_CSV).head(600).assign(row_id=lambda f: [f"r{i}" for i in
                                                                      range(len(f))])
    rows.loc[[7, 301], "Income"] = np.inf  # serving refuses a non-finite number
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(rows)), 3)):
        rows.iloc[part].to_parquet(inputs / f"p{i}.parquet", index=False)
    out = f"s3://{BUCKET}/scores-{actors}" if to_bucket else str(tmp_path / "out")
    result = batch_predict(str(inputs), out, model, id_column="row_id", actors=actors)
    assert (result.scored, result.rejected) == (598, 2)
    fs, path = filesystem_for(out)

    def read_all(directory: str) -> pd.DataFrame:
        files = [i.path for i in fs.get_file_info(FileSelector(directory))
                 if i.is_file and i.path.endswith(".parquet")]
        return pd.concat([pq.read_table(f, filesystem=fs).to_pandas() for f in files])

    scored = read_all(path).set_index("id")
    rejected = read_all(f"{path}/rejected")
    assert sorted(rejected["id"]) == ["r301", "r7"]
    assert rejected["reason"].str.contains("Income").all()
    assert (scored["model_version"] == model.version).all() and len(scored) == 598
    good = rows.drop(index=[7, 301]).set_index("row_id")
    expected = OnnxModel(model.onnx_bytes, model.schema).predict_frame(good)
    np.testing.assert_allclose(scored.loc[good.index, "p_good"], expected.probabilities[:, 1],
                               rtol=1e-6)


def test_batch_scoring_with_as_many_sessions_as_cpus_is_refused(s3_and_ray, tmp_path):
    """Sessions on every CPU would leave none to read the input: the job would wait forever."""
    from raylane.batch.job import batch_predict

    cpus = int(ray.cluster_resources()["CPU"])
    with pytest.raises(ValueError, match=r"--actors: 6 ONNX Runtime sessions .* has 6 CPUs"):
        batch_predict(str(tmp_path / "in"), str(tmp_path / "out"), model=None, actors=cpus)


def test_one_csv_file_is_cut_into_read_units_and_scored(trained, s3_and_ray, tmp_path):
    """Ray reads a CSV file with one task and, left to itself, cuts it into blocks of about
    1 MiB for what follows; the job asks for one block per read unit instead."""
    from raylane.batch.job import batch_predict
    from raylane.data.distributed import read_dataset
    from raylane.data.sources import resolve
    from raylane.model.store import load_registered_model

    config, _ = trained
    model = load_registered_model("models:/scale@champion", config.tracking_uri)
    rows = pd.read_csv(CREDIT_CSV).drop(columns=["Status"])
    rows.insert(0, "row_id", [f"r{i}" for i in range(len(rows))])
    rows.loc[11, "Income"] = np.inf
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    source = resolve(str(path))
    assert read_dataset(source, read_unit_bytes=source.total_bytes // 3 + 1
                        ).materialize().num_blocks() == 3
    assert read_dataset(source).materialize().num_blocks() > 3
    result = batch_predict(str(path), str(tmp_path / "out"), model, id_column="row_id")
    assert (result.scored, result.rejected) == (len(rows) - 1, 1)
