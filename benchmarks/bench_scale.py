"""Scale benchmark: the single-process path (tune.workers_per_trial: 1) vs the data-parallel path
(Ray Data + Ray Train, workers_per_trial: 2) on one generated table, same params and rounds.

    python -m benchmarks.bench_scale --rows 1000000 --out /tmp/bench_scale.json
    python -m benchmarks.bench_scale --rows 1000000 10000000 --workers 2

The table (seeded; 12 numeric columns, 6 categorical, a binary target learnable from a few of
them) is written as Parquet shards by a Ray Data pipeline (``ray.data.range(N).map_batches``).
Each path runs the whole training job (read, search of one fixed configuration, evaluation,
ONNX export, parity, registry) in its own child process, so the driver's peak RSS
(``ru_maxrss``) is that path's own; Ray's worker processes (the Train workers, Ray Data's
tasks) are sampled apart (:class:`WorkerMemory`). The
data-parallel path's phases come from the ``phase.*`` metrics its job records. Not in CI.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

NUMERIC, CATEGORICAL = 12, 6
REPORT_EVERY = 20
PARAMS = {"tree_method": "hist", "n_estimators": 100, "max_depth": 6, "learning_rate": 0.1}


def generate(batch: dict[str, np.ndarray]) -> pd.DataFrame:
    """Rows for the ids in ``batch`` (seeded by the first id: the table is the same each run)."""
    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]))
    n = len(ids)
    out = {f"x{i}": rng.normal(size=n) for i in range(NUMERIC)}
    for i in range(CATEGORICAL):
        out[f"c{i}"] = rng.choice([f"v{j}" for j in range(5 + 3 * i)], n)
    logit = (out["x0"] - 0.8 * out["x1"] + 0.5 * out["x2"] * out["x3"]
             + np.where(out["c0"] == "v1", 1.0, 0.0) - 0.5)
    out["x4"][rng.random(n) < 0.02] = np.nan
    out["target"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame(out)


def write_table(rows: int, where: Path) -> float:
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.range(rows).map_batches(generate, batch_format="numpy", batch_size=250_000) \
            .write_parquet(str(where))
    finally:
        ray.shutdown()
    return time.perf_counter() - started


class WorkerMemory(threading.Thread):
    """Peak memory of this session's Ray worker processes, sampled every ``every`` s, per
    process title (``ray::RayTrainWorker``...): the highest RSS and USS of any one process, and
    the highest sum of USS over all of them at one moment. RSS counts the object store's shared
    pages a worker touched; USS only the process's own."""

    def __init__(self, every: float = 1.0):
        super().__init__(daemon=True)
        self.every, self.done = every, threading.Event()
        self.rss: dict[str, float] = {}
        self.uss: dict[str, float] = {}
        self.peak_total_uss_mb = 0.0

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.done.wait(self.every):
            total = 0.0
            for proc in me.children(recursive=True):  # ray.init's raylet and its workers
                try:
                    cmd, mem = proc.cmdline(), proc.memory_full_info()
                except psutil.Error:  # ended between the listing and the read
                    continue
                if not cmd or not cmd[0].startswith("ray::"):
                    continue
                title = cmd[0].split(".")[0].split(" ")[0]
                self.rss[title] = max(self.rss.get(title, 0.0), mem.rss / 2**20)
                self.uss[title] = max(self.uss.get(title, 0.0), mem.uss / 2**20)
                total += mem.uss / 2**20
            self.peak_total_uss_mb = max(self.peak_total_uss_mb, total)


def run_path(table: Path, workers: int, store: Path, rounds: int) -> dict:
    """One training job in this process (called in a child); its figures as a dict."""
    import ray

    from raylane.config import parse_config
    from raylane.training.job import run_pipeline

    config = parse_config({
        "data": {"path": str(table), "target": "target", "task": "classification"},
        # Same cores for both paths: the single process trains with 2 threads on 2 CPUs, the
        # data-parallel trial with 2 workers of 1 thread each.
        "model": {"family": "xgboost", "report_every": REPORT_EVERY,
                  "params": {**PARAMS, "n_estimators": rounds,
                             "n_jobs": 2 if workers == 1 else 1}},
        # 2 workers x 1 CPU and the trial function's 0.01 CPU would not fit in the 2 CPUs
        # (the job refuses it): the workers take 0.995 each
        "tune": {"num_samples": 1, "workers_per_trial": workers,
                 "cpus_per_trial": 2 if workers == 1 else 0.995,
                 "scheduler": {"type": "fifo"}, "metric": "roc_auc",
                 "storage_path": str(store / "ray_results")},
        "mlflow": {"registered_model": f"bench{workers}", "experiment": "bench-scale",
                   "tracking_uri": f"sqlite:///{store / 'mlflow.db'}"},
        "gates": {"must_beat_baseline": False}, "seed": 0,
    })
    started = time.perf_counter()
    # The dashboard stays on: Ray Train's placement-group cleaner needs it.
    ray.init(num_cpus=2, include_dashboard=workers > 1, log_to_driver=False)
    memory = WorkerMemory()
    memory.start()
    try:
        result = run_pipeline(config)
        from raylane.tracking.runs import mlflow_client

        client = mlflow_client(config.tracking_uri)
        metrics = client.get_run(result.run_id).data.metrics
        try:
            per_round = seconds_per_round(client, result.run_id, REPORT_EVERY)
        except Exception as exc:  # a figure missing must not lose the run's other figures
            print(f"seconds per round not computed: {exc!r}", file=sys.stderr)
            per_round = None
    finally:
        memory.done.set()
        memory.join()
        ray.shutdown()
    return {
        "workers_per_trial": workers, "wall_s": time.perf_counter() - started,
        "holdout_roc_auc": result.evaluation.holdout["roc_auc"],
        "auc_error_bound": metrics.get("holdout_auc_error_bound"),
        "phases_s": {k.removeprefix("phase."): v for k, v in metrics.items()
                     if k.startswith("phase.")},
        "seconds_per_round": per_round,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mb": {k: round(v) for k, v in sorted(memory.rss.items())},
        "worker_peak_uss_mb": {k: round(v) for k, v in sorted(memory.uss.items())},
        "workers_peak_total_uss_mb": round(memory.peak_total_uss_mb),
    }


def seconds_per_round(client, parent_run_id: str, report_every: int) -> float | None:
    """Boosting time per round of the search's trial: the time between its first and last
    reports (logged by Tune's MLflow logger as it received them) over the rounds between."""
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent_run_id}'")
    for child in children:
        history = sorted(client.get_metric_history(child.info.run_id, "training_iteration"),
                         key=lambda m: m.value)
        if len(history) >= 2:
            first, last = history[0], history[-1]
            return ((last.timestamp - first.timestamp) / 1000
                    / ((last.value - first.value) * report_every))
    return None


def auc_comparison(rows: int, batches: int = 100) -> dict:
    """Histogram AUC over ``batches`` batches vs sklearn's exact AUC on ``rows`` scores from a
    booster-like score distribution (no Ray)."""
    from raylane.model.batched_metrics import Accumulator
    from raylane.model.metrics import METRICS

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, rows)
    score = 1 / (1 + np.exp(-(rng.normal(size=rows) + 1.2 * y - 0.6)))
    proba = np.column_stack([1 - score, score]).astype(np.float32)
    total = Accumulator("classification")
    started = time.perf_counter()
    for idx in np.array_split(np.arange(rows), batches):
        part = Accumulator("classification")
        part.add(y[idx], proba[idx])
        total = total.merge(part)
    histogram_s = time.perf_counter() - started
    started = time.perf_counter()
    exact = METRICS["roc_auc"](y, proba)
    exact_s = time.perf_counter() - started
    return {"rows": rows, "histogram_auc": total.auc(), "exact_auc": exact,
            "difference": total.auc() - exact, "bound": total.auc_error_bound(),
            "histogram_s": histogram_s, "exact_s": exact_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--paths", choices=["both", "single", "parallel"], default="both",
                        help="which training paths to run on each table")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--auc-only", action="store_true",
                        help="only the histogram-vs-exact AUC comparison (no Ray)")
    parser.add_argument("--rounds", type=int, default=100, help="boosting rounds")
    parser.add_argument("--child", nargs=4, metavar=("TABLE", "WORKERS", "STORE", "ROUNDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        table, workers, store, rounds = args.child
        print(json.dumps(run_path(Path(table), int(workers), Path(store), int(rounds))))
        return
    if args.auc_only:
        for rows in args.rows:
            print(json.dumps(auc_comparison(rows)))
        return
    report = []
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            table = Path(tmp) / "table"
            entry = {"rows": rows, "rounds": args.rounds, "write_s": write_table(rows, table)}
            paths = {"both": (1, args.workers), "single": (1,),
                     "parallel": (args.workers,)}[args.paths]
            for workers in paths:
                store = Path(tmp) / f"w{workers}"
                store.mkdir()
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_scale", "--child", str(table),
                     str(workers), str(store), str(args.rounds)],
                    capture_output=True, text=True, check=True)
                entry[f"workers_{workers}"] = json.loads(out.stdout.strip().splitlines()[-1])
            if args.paths == "both":
                single, parallel = entry["workers_1"], entry[f"workers_{args.workers}"]
                entry["wall_ratio"] = parallel["wall_s"] / single["wall_s"]
                entry["auc_difference"] = (parallel["holdout_roc_auc"]
                                           - single["holdout_roc_auc"])
            print(json.dumps(entry, indent=2))
            report.append(entry)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
