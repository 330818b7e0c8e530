"""MLflow as the manifests deploy it: `mlflow server --app-name basic-auth` on a throwaway
PostgreSQL (tracking store and basic auth's user store) with artifacts on S3 (moto's server),
migrations run once beforehand. One training job, shared by the module, registers and promotes
through the server as the writer; then the ONNX graph is found in the bucket, the accounts are
checked, the server goes away and comes back on the same database; continuous training judges a
challenger and the console's Models page moves the champion through the same server. Last, two
servers on one database and bucket behind HAProxy (the Kubernetes Service's stand-in), one
SIGKILLed while a training job registers through the front."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psycopg2
import pyarrow.fs as pafs
import pytest
from support.console import click_promote, models_page
from support.haproxy import haproxy
from support.mlflow_server import (
    ADMIN,
    READER,
    WRITER,
    MlflowServer,
    Store,
    as_user,
    db_upgrade,
    mlflow_server,
    run_account_setup,
    status_of,
)
from support.paths import CREDIT_CSV, ROOT
from support.postgres import Postgres, postgres
from support.s3 import KEYS, moto_server

from raylane.config import PipelineConfig, load_config
from raylane.console import versions as reg
from raylane.continuous import CTResult, run_continuous_training
from raylane.model import tags
from raylane.model.mlflow_failures import is_transient
from raylane.model.onnx_model import OnnxModel
from raylane.model.store import ONNX_FILE, load_registered_model
from raylane.tracking.registry import CHALLENGER, CHAMPION, set_alias
from raylane.tracking.runs import mlflow_client
from raylane.training.job import PipelineResult, load_data, run_pipeline

pytestmark = pytest.mark.slow

BUCKET = "mlflow-artifacts"
FAST = ["tune.num_samples=2", "tune.max_concurrent_trials=2", "tune.search_alg=random",
        "model.search_space.n_estimators={type: qrandint, lower: 10, upper: 30, q: 10}",
        "model.report_every=10"]


@dataclass
class Tier:
    pg: Postgres
    fs: pafs.S3FileSystem
    endpoint: str
    scratch: Path

    def store(self, name: str, migrations: int = 1) -> Store:
        """A fresh tracking database (basic auth's is the migrations' to create) and bucket
        prefix named ``name``, migrated by ``migrations`` init containers at once."""
        self.pg.create_database(name)
        # the bucket's key pair as the pods get it: an AWS shared credentials file
        creds = self.scratch / "s3-credentials"
        creds.write_text(f"[default]\naws_access_key_id = {KEYS['AWS_ACCESS_KEY_ID']}\n"
                         f"aws_secret_access_key = {KEYS['AWS_SECRET_ACCESS_KEY']}\n")
        store = Store(self.pg.uri(name, driver="postgresql+psycopg2"),
                      f"postgresql+psycopg2://127.0.0.1:{self.pg.port}/{name}_auth",
                      f"s3://{BUCKET}/{name}",
                      {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_DEFAULT_REGION": "us-east-1",
                       "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
                       "PGUSER": self.pg.user, "PGPASSWORD": self.pg.password})
        runs = []
        for i in range(migrations):
            (self.scratch / f"{name}-migrate-{i}").mkdir()
            runs.append(db_upgrade(store, self.scratch / f"{name}-migrate-{i}"))
        codes = [run.wait(300) for run in runs]
        logs = [(self.scratch / f"{name}-migrate-{i}/migrate.log").read_text()
                for i in range(migrations)]
        assert codes == [0] * migrations, logs
        # one of them created the auth database, and only one
        assert sum(f"created database {name}_auth" in log for log in logs) == 1, logs
        return store

    def objects(self, prefix: str) -> dict[str, int]:
        """{key: size} of the objects under ``prefix`` in the bucket."""
        found = self.fs.get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True))
        return {f.path: f.size for f in found if f.type == pafs.FileType.File}


def credit_config(tracking_uri: str, scratch: Path, *extra: str) -> PipelineConfig:
    return load_config(ROOT / "tune_configs" / "credit_xgboost.yaml",
                       [*FAST, f"mlflow.tracking_uri={tracking_uri}", f"data.path={CREDIT_CSV}",
                        f"tune.storage_path={scratch / 'ray_results'}", *extra])


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("pg-s3")
    with postgres() as pg, moto_server(scratch, BUCKET) as (endpoint, fs):
        yield Tier(pg, fs, endpoint, scratch)


@pytest.fixture(scope="module")
def writer_ray(tier):
    """A local Ray for the module with the writer's credentials in the environment (its
    workers inherit them, as the training job's pods get them from the writer Secret)."""
    import ray

    with as_user(WRITER):
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            yield
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def server(tier):
    """One server on the tier, with the accounts the account-setup Job makes."""
    with mlflow_server(tier.scratch / "one", auth=True, store=tier.store("one")) as srv:
        setup = run_account_setup(srv.url)
        assert setup.returncode == 0, setup.stderr
        yield srv


@pytest.fixture(scope="module")
def trained(server, writer_ray, tier) -> PipelineResult:
    return run_pipeline(credit_config(server.url, tier.scratch / "one"))


def test_the_training_job_registers_and_promotes_onto_postgres_and_s3(tier, server, trained):
    assert trained.decision.promoted, trained.decision.reasons
    client = mlflow_client(server.url)
    champion = client.get_model_version_by_alias("credit", CHAMPION)
    assert str(champion.version) == str(trained.version), (champion, trained.version)
    # the registry is in PostgreSQL ...
    with psycopg2.connect(tier.pg.uri("one")) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version FROM model_versions")
        assert cur.fetchall() == [("credit", int(trained.version))]
        cur.execute("SELECT count(*) FROM runs WHERE status = 'FINISHED'")
        assert cur.fetchone()[0] == 3  # the job's run and its two trials
    # ... the ONNX graph in the bucket, and nothing on the server's disk
    with as_user(READER):
        registered = load_registered_model(f"models:/credit@{CHAMPION}", server.url)
    onnx = {k: size for k, size in tier.objects("one").items() if k.endswith("/" + ONNX_FILE)}
    assert len(onnx) == 1, tier.objects("one")
    with tier.fs.open_input_stream(next(iter(onnx))) as f:
        assert f.read() == registered.onnx_bytes
    assert not (tier.scratch / "one" / "artifacts").exists()
    # and it loads back and scores as the job measured
    holdout = load_data(trained.config)[1].holdout
    proba = OnnxModel(registered.onnx_bytes, registered.schema).predict_frame(
        holdout.X).probabilities
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(holdout.y, proba[:, 1]) == pytest.approx(
        trained.evaluation.holdout["roc_auc"], abs=1e-4)


def test_the_reader_cannot_promote_the_writer_can(server, trained):
    version = str(trained.version)
    with as_user(READER):
        reader = mlflow_client(server.url)
        assert reader.get_model_version_by_alias("credit", CHAMPION).version == version
        for alias in (CHAMPION, CHALLENGER):  # moving an alias needs EDIT: the reader has READ
            with pytest.raises(Exception) as denied:
                set_alias(reader, "credit", alias, version)
            assert status_of(denied.value) == 403, denied.value
        assert "credit" in {m.name for m in reader.search_registered_models()}
    with as_user(WRITER):
        writer = mlflow_client(server.url)
        set_alias(writer, "credit", CHALLENGER, version)
        assert writer.get_model_version_by_alias("credit", CHALLENGER).version == version
        writer.delete_registered_model_alias("credit", CHALLENGER)


def test_account_setup_puts_a_grant_changed_by_hand_back(server, trained):
    from mlflow.server.auth.client import AuthServiceClient

    with as_user(ADMIN):
        admin = AuthServiceClient(server.url)
        admin.revoke_user_permission(READER[0], "registered_model", "*")
        admin.grant_user_permission(READER[0], "registered_model", "*", "EDIT")
    with as_user(READER):  # the hand-made grant holds: the reader may move the alias
        set_alias(mlflow_client(server.url), "credit", CHAMPION, trained.version)
    setup = run_account_setup(server.url)
    assert setup.returncode == 0, setup.stderr
    with as_user(READER), pytest.raises(Exception) as denied:
        set_alias(mlflow_client(server.url), "credit", CHAMPION, trained.version)
    assert status_of(denied.value) == 403, denied.value


def test_a_registry_outage_is_transient_and_loses_nothing(tier, server, trained, monkeypatch):
    # fail fast while the server is down (MLflow's own retries would wait minutes per call)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    client = mlflow_client(server.url)
    experiment = client.get_experiment_by_name(trained.config.mlflow.experiment)
    runs = {r.info.run_id for r in client.search_runs([experiment.experiment_id])}
    versions = {v.version for v in client.search_model_versions("name='credit'")}
    objects = tier.objects("one")

    server.stop()
    with pytest.raises(Exception) as down:
        client.get_model_version_by_alias("credit", CHAMPION)
    assert is_transient(down.value), down.value
    with as_user(READER), pytest.raises(Exception) as down:
        load_registered_model(f"models:/credit@{CHAMPION}", server.url)
    assert is_transient(down.value), down.value

    server.start()  # a new process on the same databases and bucket
    assert {r.info.run_id for r in client.search_runs([experiment.experiment_id])} == runs
    assert {v.version for v in client.search_model_versions("name='credit'")} == versions
    assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == str(
        trained.version)
    assert tier.objects("one") == objects
    with as_user(READER):
        assert load_registered_model(f"models:/credit@{CHAMPION}", server.url).onnx_bytes
    # the accounts live in PostgreSQL too: the restarted server still refuses the reader
    with as_user(READER), pytest.raises(Exception) as denied:
        set_alias(mlflow_client(server.url), "credit", CHAMPION, trained.version)
    assert status_of(denied.value) == 403, denied.value


@pytest.fixture(scope="module")
def continuous(tier, server, trained, writer_ray) -> CTResult:
    """One continuous-training run as the CT job's writer: the credit rows after the first
    3,000 as new labelled rows, a fixed challenger, judged against the job's champion."""
    new_rows = tier.scratch / "new.parquet"
    pd.read_csv(CREDIT_CSV).iloc[3000:].to_parquet(new_rows)
    config = credit_config(server.url, tier.scratch / "ct", "tune.num_samples=1",
                           "model.search_space={}", "gates.min_holdout={}",
                           "model.params={tree_method: hist, n_jobs: 1, n_estimators: 60, "
                           "max_depth: 3, learning_rate: 0.1}")
    return run_continuous_training(config, force=True, new_data=str(new_rows))


def test_continuous_training_judges_and_links_on_postgres_and_s3(tier, server, trained,
                                                                 continuous):
    result = continuous
    assert result.retrained and result.model_version == "2", result
    client = mlflow_client(server.url)
    # the new version is the challenger either way; champion only if it won
    aliases = {CHAMPION: "2" if result.promoted else str(trained.version), CHALLENGER: "2"}
    for alias, version in aliases.items():
        assert str(client.get_model_version_by_alias("credit", alias).version) == version
    version = client.get_model_version("credit", "2")
    assert version.tags[tags.CT_RUN_ID] == result.run_id
    assert version.run_id == result.training_run_id
    judged = {k: float(result.scores[f"{tags.JUDGING_PREFIX}{k}"])
              for k in ("challenger", "champion")}
    assert (judged["challenger"] > judged["champion"]) == result.promoted, (judged, result)
    ct_run = client.get_run(result.run_id)
    assert ct_run.info.status == "FINISHED"
    assert ct_run.data.tags[tags.CT_DECISION] == ("promoted" if result.promoted
                                                       else "not promoted")
    # the judging record is an artifact in the bucket, read back through the server
    path = client.download_artifacts(result.run_id, "judging/holdout_definition.json",
                                     str(tier.scratch / "download"))
    assert json.loads(Path(path).read_text())["new_rows"] == 1454
    with psycopg2.connect(tier.pg.uri("one")) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, version FROM model_versions ORDER BY version")
        assert cur.fetchall() == [("credit", 1), ("credit", 2)]
        cur.execute("SELECT alias, version FROM registered_model_aliases WHERE name = 'credit'")
        assert {a: str(v) for a, v in cur.fetchall()} == aliases
    graphs = [k for k in tier.objects("one") if k.endswith("/" + ONNX_FILE)]
    assert len(graphs) == 2, graphs  # the champion's and the challenger's, both in the bucket


def test_the_console_moves_the_champion_on_postgres_and_s3(tier, server, continuous):
    client = mlflow_client(server.url)
    before = str(client.get_model_version_by_alias("credit", CHAMPION).version)
    target = "1" if before == "2" else "2"

    reader = models_page(server.url, READER)
    assert reader.metric[0].value == f"v{before}"
    assert next(b for b in reader.button if b.label == "Move champion").disabled
    writer = click_promote(models_page(server.url, WRITER), server.url, WRITER, target,
                           "moved from the console on the deployed tier")
    assert any(f"v{target} is champion (was v{before})" in s.value for s in writer.success), \
        [e.value for e in writer.error]

    assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == target
    promoted = client.get_model_version("credit", target).tags
    assert promoted[reg.PROMOTED_FROM] == before
    assert promoted[reg.PROMOTED_WHY] == "moved from the console on the deployed tier"
    with psycopg2.connect(tier.pg.uri("one")) as conn, conn.cursor() as cur:
        cur.execute("SELECT version FROM registered_model_aliases "
                    "WHERE name = 'credit' AND alias = %s", (CHAMPION,))
        assert cur.fetchall() == [(int(target),)]
    with as_user(READER):  # what a replica polling `champion` loads next, from the bucket
        assert load_registered_model(f"models:/credit@{CHAMPION}", server.url).version == target


class AliasPoller(threading.Thread):
    """A reader asking for the champion through ``url`` every 0.1 s, as a Serve replica
    polls: (monotonic time, HTTP status or the transport error's name, version) per poll."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.seen, self.done = url, [], threading.Event()
        self.champion_seen = threading.Event()

    def run(self) -> None:
        with httpx.Client(auth=READER, timeout=10) as http:
            while not self.done.is_set():
                try:
                    r = http.get(f"{self.url}/api/2.0/mlflow/registered-models/alias",
                                 params={"name": "credit", "alias": CHAMPION})
                    version = r.json().get("model_version", {}).get("version") if r.is_success \
                        else None
                    self.seen.append((time.monotonic(), r.status_code, version))
                    if version is not None:
                        self.champion_seen.set()
                except httpx.TransportError as exc:
                    self.seen.append((time.monotonic(), type(exc).__name__, None))
                self.done.wait(0.1)


def test_two_servers_behind_a_service_one_killed_mid_job(tier, writer_ray):
    store = tier.store("pair", migrations=2)  # both pods' init containers at once, before
    # either server starts: they take turns under the lock, the second finds nothing to do
    servers = []
    for name in ("a", "b"):
        servers.append(MlflowServer(tier.scratch / name, auth=True, store=store))
    doomed, survivor = servers
    poller = None
    try:
        with ThreadPoolExecutor(2) as pool:  # both at once: neither migrates, nothing races
            list(pool.map(lambda s: s.start(), servers))
        with haproxy(tier.scratch, [("127.0.0.1", s.port) for s in servers]) as front:
            setup = run_account_setup(front)
            assert setup.returncode == 0, setup.stderr
            poller = AliasPoller(front)  # the reader, from here to the end
            poller.start()
            # both pods' mlflow-accounts sidecars at once on the one user store: both succeed,
            # and the reader's grant, already right, is never revoked under its requests
            with ThreadPoolExecutor(2) as pool:
                again = list(pool.map(run_account_setup, [s.url for s in servers]))
            assert [r.returncode for r in again] == [0, 0], [r.stderr for r in again]
            for s in servers:  # one user store: the accounts made through the front work on both
                r = httpx.get(f"{s.url}/api/2.0/mlflow/experiments/search",
                              params={"max_results": 1}, auth=WRITER)
                assert r.status_code == 200, r.text

            config = credit_config(front, tier.scratch / "pair")
            killed_at: list[float] = []

            def kill_once_the_job_runs() -> None:
                client = mlflow_client(survivor.url)
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    experiment = client.get_experiment_by_name(config.mlflow.experiment)
                    if experiment and client.search_runs([experiment.experiment_id]):
                        doomed.kill()
                        killed_at.append(time.monotonic())
                        return
                    time.sleep(0.2)

            killer = threading.Thread(target=kill_once_the_job_runs, daemon=True)
            killer.start()
            try:
                result = run_pipeline(config)
                finished = time.monotonic()
                # the alias is set as the job ends: let the reader's next poll see it
                poller.champion_seen.wait(60)
            finally:
                killer.join(60)
                poller.done.set()
                poller.join(30)

            assert killed_at and killed_at[0] < finished, "the server was not killed mid-job"
            assert doomed.proc is None
            assert result.decision.promoted and str(result.version) == "1", result.decision
            client = mlflow_client(front)
            assert str(client.get_model_version_by_alias("credit", CHAMPION).version) == "1"
            experiment = client.get_experiment_by_name(config.mlflow.experiment)
            runs = client.search_runs([experiment.experiment_id])
            assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
            parent = client.get_run(result.run_id)
            assert parent.data.tags["raylane.trial_logging"] == "complete"
            assert parent.data.metrics["trials.unlogged_results"] == 0
            with psycopg2.connect(tier.pg.uri("pair")) as conn, conn.cursor() as cur:
                cur.execute("SELECT name, version FROM model_versions")
                assert cur.fetchall() == [("credit", 1)]  # registered once, retries or not
            with as_user(READER):
                registered = load_registered_model(f"models:/credit@{CHAMPION}", front)
            assert registered.onnx_bytes and any(
                k.endswith("/" + ONNX_FILE) for k in tier.objects("pair"))

            # the replica's polls: answered throughout but for transient failures, and the
            # champion seen through the survivor after the kill
            # before the first champion: 403 (basic auth's answer for a model not created yet)
            # or 400 (the model exists, its alias not yet); after it, only answers or the
            # killed server's transient failures
            found = [t for t, status, _ in poller.seen if status == 200]
            assert found, ("the reader never saw the champion",
                           Counter(status for _, status, _ in poller.seen))
            transient = {502, 503, "RemoteProtocolError", "ReadError"}
            before = {status for t, status, _ in poller.seen if t < found[0]}
            after = {status for t, status, _ in poller.seen if t >= found[0]}
            assert before <= {400, 403, 404} | transient, before
            assert after <= {200} | transient, after
            assert any(t > killed_at[0] and version == "1" for t, _, version in poller.seen)
    finally:
        if poller is not None:
            poller.done.set()
        for s in servers:
            s.stop()
