"""Batch-scoring benchmark: ``python -m ray_jobs.batch_predict`` (Ray Data, ONNX Runtime sessions
in tasks or an actor pool, Parquet out, refused rows under rejected/) vs one in-process ONNX
Runtime session over the same Parquet files.

    python -m benchmarks.bench_batch --rows 2000000 --actors 1 --cli --out /tmp/batch.json

The model: XGBoost (fixed parameters) on the bundled credit table, published with the training
job's own export -> parity -> register -> promote into a temporary MLflow (SQLite), so the job
loads it as ``models:/bench@champion``. The input: ``--rows`` rows drawn with replacement
(seeded) from the credit table's raw columns, a ``row_id`` column, ``--bad`` rows with a
non-finite ``Income`` (which serving refuses), as ``--files`` Parquet files (``--format csv``:
CSV files; one file is the case Ray reads with a single task).

Figures (all on the same files, the job's batch size (``--batch-size``, default the job's
default), one ONNX Runtime thread per session):

* ``in_process_onnx``: pyarrow reads each file batch by batch, ``OnnxModel.predict_frame``
  scores it (the graph's feeds from the frame, one ``session.run``); nothing written;
* ``in_process_scorer``: the job's own per-batch callable (``raylane.batch.scoring.Scorer``:
  row checks as serving does them, ids, the output frame) on the same batches, in process,
  nothing written: what the job does per block, without Ray;
* ``ray_job``: ``ray_jobs.batch_predict.main`` (the module the command runs) in this process
  with ``--actors K`` (0: tasks on both CPUs, a session per worker process; K: an actor pool of
  K sessions), Ray already started (``ray.init`` and a first small job, which starts the
  workers, reported apart), so its time is steady-state reading, scoring and writing;
  ``--repeat N`` runs it N times (the first still starts a worker the small job did not) and
  records each run's wall time and the machine's busy and idle CPU seconds (``/proc/stat``),
  the figures taken from the median run;
* ``cli``: the command itself in a child process, Ray start-up included (``--cli``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "bench"
PARAMS = {"n_estimators": 100, "max_depth": 5}
CPUS = 2  # the Ray the job runs on


def register_model(tracking_uri: str) -> dict:
    """Train and publish the credit model as the training job would; its figures."""
    from raylane.config import GatesConfig
    from raylane.data.read import infer_schema, read_table, split_data
    from raylane.model.families import get_family
    from raylane.model.metrics import METRICS
    from raylane.release.gates import check_gates, evaluate
    from raylane.release.publish import publish
    from raylane.tracking.experiments import open_experiment
    from raylane.tracking.runs import mlflow_client, parent_run
    from raylane.training.fit import fit_model

    frame = read_table(str(ROOT / "data" / "credit_data.csv"))
    schema = infer_schema(frame, "Status", None)
    data = split_data(frame, schema, 0.2, 0.1, 0)
    metric = METRICS["roc_auc"]
    fit = fit_model(data, get_family("xgboost"), PARAMS, metric, 0)
    client = mlflow_client(tracking_uri)
    evaluation = evaluate(fit.pipeline, data, metric, 0.25)
    with parent_run(client, open_experiment(client, "bench-batch"), run_name="bench") as run_id:
        published = publish(fit.pipeline, schema, data.holdout, metric=metric,
                            gates=check_gates(evaluation, GatesConfig()), client=client,
                            registered_model=MODEL, run_id=run_id)
    return {"version": str(published.version.version), "params": PARAMS,
            "holdout_roc_auc": evaluation.holdout["roc_auc"]}


def write_input(rows: int, bad: int, files: int, seed: int, where: Path,
                fmt: str = "parquet") -> list[int]:
    """The input table as ``files`` Parquet (or CSV) files; the row numbers made bad."""
    frame = pd.read_csv(ROOT / "data" / "credit_data.csv").drop(columns=["Status"])
    rng = np.random.default_rng(seed)
    table = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
    table.insert(0, "row_id", [f"r{i}" for i in range(rows)])
    bad_rows = sorted(rng.choice(rows, bad, replace=False).tolist())
    table.loc[bad_rows, "Income"] = np.inf  # serving refuses a non-finite number
    where.mkdir(parents=True)
    for i, part in enumerate(np.array_split(np.arange(rows), files)):
        if fmt == "csv":
            table.iloc[part].to_csv(where / f"part-{i:04d}.csv", index=False)
        else:
            pq.write_table(pa.Table.from_pandas(table.iloc[part], preserve_index=False),
                           where / f"part-{i:04d}.parquet")
    return bad_rows


def batches(directory: Path, size: int):
    """The files' rows, ``size`` at a time (CSV: parsed as a stream, as Ray's reader does)."""
    for path in sorted(directory.glob("*.parquet")):
        yield from pq.ParquetFile(path).iter_batches(batch_size=size)
    for path in sorted(directory.glob("*.csv")):
        with pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=16 << 20)) as reader:
            for block in reader:
                for start in range(0, block.num_rows, size):
                    yield block.slice(start, size)


def in_process(directory: Path, score, size: int) -> dict:
    """``score(batch)`` over every batch of the files: wall and CPU seconds, rows."""
    rows = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches(directory, size):
        score(batch)
        rows += batch.num_rows
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"rows": rows, "wall_s": wall, "cpu_s": cpu, "rows_per_s": rows / wall}


def machine_cpu_s() -> tuple[float, float]:
    """The machine's busy (user, nice, system) and idle CPU seconds since boot (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        user, nice, system, idle = map(int, f.readline().split()[1:5])
    return (user + nice + system) / ticks, idle / ticks


def run_job(argv: list[str]) -> dict:
    from ray_jobs.batch_predict import main

    busy, idle = machine_cpu_s()
    t0 = time.perf_counter()
    code = main(argv)
    wall = time.perf_counter() - t0
    busy_after, idle_after = machine_cpu_s()
    return {"exit": code, "wall_s": wall, "machine_busy_cpu_s": busy_after - busy,
            "machine_idle_cpu_s": idle_after - idle}


def count_output(out: Path) -> tuple[int, int]:
    scored = sum(pq.ParquetFile(p).metadata.num_rows for p in out.glob("*.parquet"))
    rejected = sum(pq.ParquetFile(p).metadata.num_rows
                   for p in (out / "rejected").glob("*.parquet"))
    return scored, rejected


def save(out: dict, path: str) -> None:
    """Written after each stage, so a run cut off keeps what it measured."""
    out["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(out, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    from raylane.batch.job import BATCH_SIZE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--bad", type=int, default=10)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    # 0: tasks (the job's default). With as many actors as the cluster has CPUs the read tasks
    # get none and the job waits for ever (seen with --actors 2 on 2 CPUs): the job refuses it.
    parser.add_argument("--actors", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"rows per batch everywhere (default: the job's, {BATCH_SIZE})")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the job per --actors value, Ray warm (median reported)")
    parser.add_argument("--cli", action="store_true", help="also run the command end to end")
    parser.add_argument("--out", default=str(RESULTS / "batch.json"))
    args = parser.parse_args(argv)

    from raylane.batch.scoring import Scorer
    from raylane.model.onnx_model import OnnxModel
    from raylane.model.store import load_registered_model

    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load_average_start": [round(x, 2) for x in os.getloadavg()]},
                 "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="raylane-bench-batch-") as tmp_name:
        tmp = Path(tmp_name)
        tracking = f"sqlite:///{tmp / 'mlflow.db'}"
        t0 = time.perf_counter()
        out["model"] = register_model(tracking)
        out["model"]["train_and_publish_s"] = time.perf_counter() - t0
        uri = f"models:/{MODEL}@champion"
        model = load_registered_model(uri, tracking)
        t0 = time.perf_counter()
        bad = write_input(args.rows, args.bad, args.files, args.seed, tmp / "in", args.format)
        out["input"] = {"rows": args.rows, "bad_rows": len(bad), "files": args.files,
                        "format": args.format, "write_s": time.perf_counter() - t0,
                        "bytes": sum(p.stat().st_size for p in (tmp / "in").iterdir())}
        print(f"model v{model.version}, input {args.rows:,} rows written", flush=True)

        session = OnnxModel(model.onnx_bytes, model.schema, intra_op_threads=1)
        out["in_process_onnx"] = in_process(
            tmp / "in", lambda b: session.predict_frame(b.to_pandas()), args.batch_size)
        print("in-process ONNX:", out["in_process_onnx"], flush=True)
        save(out, args.out)
        scorer = Scorer(model.onnx_bytes, model.schema.to_json(), model.version, "row_id")
        out["in_process_scorer"] = in_process(
            tmp / "in", lambda b: scorer(pa.Table.from_batches([b])), args.batch_size)
        print("in-process Scorer:", out["in_process_scorer"], flush=True)
        save(out, args.out)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
        out["ray_init_s"] = time.perf_counter() - t0
        try:
            first = tmp / "first"
            first.mkdir()
            pq.write_table(pa.Table.from_batches([next(batches(tmp / "in", 20_000))]),
                           first / "part.parquet")
            out["first_small_job"] = run_job(
                ["--model-uri", uri, "--tracking-uri", tracking, "--input", str(first),
                 "--output", str(tmp / "first-out"), "--id-column", "row_id"])
            out["ray_job"] = {}
            for actors in args.actors:
                runs = []
                for i in range(args.repeat):
                    dest = tmp / f"out-{actors}-{i}"
                    run = run_job(["--model-uri", uri, "--tracking-uri", tracking,
                                   "--input", str(tmp / "in"), "--output", str(dest),
                                   "--id-column", "row_id", "--actors", str(actors),
                                   "--batch-size", str(args.batch_size)])
                    scored, rejected = count_output(dest)
                    assert (scored, rejected) == (args.rows - len(bad), len(bad)), \
                        (scored, rejected)
                    shutil.rmtree(dest)
                    runs.append(run)
                    print(f"ray job, {actors} actor(s), run {i + 1}:", run, flush=True)
                job = dict(sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2])
                if len(runs) > 1:
                    job["runs"] = runs
                sessions = actors or CPUS  # 0: tasks, a session per worker process
                job.update(scored=scored, rejected=rejected,
                           rows_per_s=args.rows / job["wall_s"],
                           rows_per_s_per_actor=args.rows / job["wall_s"] / sessions,
                           rows_per_s_per_cpu=args.rows / job["wall_s"] / CPUS)
                out["ray_job"][str(actors)] = job
                print(f"ray job, {actors} actor(s):", job, flush=True)
                save(out, args.out)
        finally:
            ray.shutdown()

        if args.cli:
            actors = args.actors[0]
            command = [sys.executable, "-m", "ray_jobs.batch_predict", "--model-uri", uri,
                       "--tracking-uri", tracking, "--input", str(tmp / "in"),
                       "--output", str(tmp / "cli-out"), "--id-column", "row_id",
                       "--actors", str(actors), "--batch-size", str(args.batch_size)]
            env = {**os.environ, "RAY_ADDRESS": "local"}
            t0 = time.perf_counter()
            subprocess.run(command, check=True, cwd=ROOT, env=env)
            wall = time.perf_counter() - t0
            out["cli"] = {"actors": actors, "wall_s": wall, "rows_per_s": args.rows / wall,
                          "counts": count_output(tmp / "cli-out")}
            print("command end to end:", out["cli"], flush=True)

    base = out["in_process_onnx"]["rows_per_s"]
    out["ratios_per_core"] = {
        k: {"per_actor_vs_one_session": v["rows_per_s_per_actor"] / base,
            "per_cpu_vs_one_session": v["rows_per_s_per_cpu"] / base}
        for k, v in out["ray_job"].items()}
    save(out, args.out)
    print(json.dumps(out["ratios_per_core"], indent=2))
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
