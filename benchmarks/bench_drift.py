"""Drift benchmark: raylane's monitoring report vs Evidently's DataDriftPreset on 1,000,000 logged
rows of the credit schema, in one run on this machine; per-column decisions must agree.

    python -m benchmarks.bench_drift         # a few minutes on 2 cores (most of it Evidently)
    python -m benchmarks.bench_drift --rows 200000 --shift Amount=1.2 --out /tmp/drift.json

Data: the reference is the bundled credit table as the model sees it (``raylane.data.read``'s
prepared features: 4,454 rows, 9 numeric and 4 categorical columns); the current window is
``--rows`` rows drawn from it with replacement (seeded), one column multiplied (``--shift``,
default ``Income=1.3``), numbers stored as float32 as the prediction log stores them. Scenario
``integral`` keeps the values as they are (the credit columns hold whole numbers); scenario
``continuous`` adds uniform noise in [-0.5, 0.5) to every numeric value of both samples, so no
column is integral (raylane then sorts instead of counting); scenario ``small_reference`` keeps
800 reference rows, so Evidently's default picks its p-value tests (KS, chi-square, z) instead.

Both tools get the same two Parquet files (missing categories as nulls). Evidently 0.7.23 needs
pandas < 3, so it runs in its own environment, ``.venv-evidently`` (created here with uv when
missing), as a subprocess (``benchmarks/evidently_drift.py``) timing its own read and
``Report.run``. Raylane's figures, measured in this process:

* ``compute``: ``raylane.monitoring.drift.compare`` on the two Arrow tables (what
  ``Report.run`` is to Evidently), median of ``--repeats``;
* ``read``: ``pyarrow.parquet.read_table`` of the two files;
* ``ray_data``: the same current rows written as a prediction log (20 Parquet files in the
  service's format) read with ``raylane.monitoring.reading.read_window`` (Ray Data, Ray already
  started; ``ray.init`` reported apart) plus ``compare``;
* ``monitor``: the monitor's own path on that log as it runs without labels
  (``window.summarize_window``: a log under ``reading.IN_PROCESS_MAX_BYTES`` of Parquet, as this
  one is, read file by file in the process and counted there; then
  ``drift.compare_samples``);
* ``monitor_ray_data_cold`` / ``_warm``: the same with the log read by Ray Data and counted block
  by block where the blocks lie (what the monitor does past that size), the scenario's first
  Ray Data job (cold) and again (warm), before the ``read_window`` path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.peer_env import peer_python
from raylane.config import DriftConfig
from raylane.data.read import infer_schema, prepare_features, read_table
from raylane.model.schema import MISSING_CATEGORY
from raylane.monitoring.drift import compare

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
EVIDENTLY_VENV = ROOT / ".venv-evidently"
EVIDENTLY_PINS = ["evidently==0.7.23", "pandas<3", "pyarrow"]
SMALL_REFERENCE = 800


def evidently_python() -> Path:
    return peer_python(EVIDENTLY_VENV, EVIDENTLY_PINS)


def make_data(rows: int, shift: tuple[str, float], seed: int, scenario: str):
    frame = read_table(str(ROOT / "data" / "credit_data.csv"))
    schema = infer_schema(frame, "Status", None)
    reference = prepare_features(frame[frame["Status"].notna()], schema).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    continuous = scenario == "continuous"
    if scenario == "small_reference":  # Evidently's p-value tests (KS, chi-square, z)
        reference = reference.sample(SMALL_REFERENCE, random_state=seed).reset_index(drop=True)
    current = reference.iloc[rng.integers(0, len(reference), rows)].reset_index(drop=True)
    column, factor = shift
    current[column] = current[column] * factor
    if continuous:
        for name in schema.numeric:
            reference[name] = reference[name] + rng.uniform(-0.5, 0.5, len(reference))
            current[name] = current[name] + rng.uniform(-0.5, 0.5, rows)
    for name in schema.numeric:  # the log stores float32
        current[name] = current[name].astype(np.float32)
    for name in schema.categorical:  # a missing category is null for both tools
        for f in (reference, current):
            f[name] = f[name].where(f[name] != MISSING_CATEGORY, None)
    return schema, reference, current


def write_log(current: pd.DataFrame, schema, directory: Path, files: int = 20) -> None:
    """``current`` as the service's prediction log (``raylane.serving.prediction_log``)."""
    directory.mkdir(parents=True)
    start = pd.Timestamp.now(tz="UTC")
    for i, part in enumerate(np.array_split(np.arange(len(current)), files)):
        chunk = current.iloc[part]
        struct = pa.StructArray.from_arrays(
            [pa.array(chunk[c.name].to_numpy(), type=pa.float32()) if c.kind == "numeric"
             else pa.Array.from_pandas(chunk[c.name], type=pa.string()).fill_null(MISSING_CATEGORY)
             for c in schema.columns],
            names=schema.feature_names)
        n = len(chunk)
        pq.write_table(pa.table({
            "timestamp": pa.array([start + pd.Timedelta(seconds=i)] * n,
                                  type=pa.timestamp("ms", tz="UTC")),
            "model_name": pa.array(["credit"] * n), "model_version": pa.array(["1"] * n),
            "input": struct, "prediction": pa.array(["good"] * n),
        }), directory / f"predictions-{i:04d}.parquet", compression="zstd")


def monitor_path(log: Path, schema, reference: pa.Table, kinds: dict[str, str],
                 in_process_max_bytes: int | None = None):
    """The monitor's whole path as ``raylane.monitoring.monitor`` runs it without labels: the
    window counted per column (in this process, or with Ray Data past
    ``in_process_max_bytes``; None: the monitor's own limit), then the drift comparison."""
    from raylane.monitoring.drift import compare_samples
    from raylane.monitoring.reading import IN_PROCESS_MAX_BYTES
    from raylane.monitoring.window import reference_edges, summarize_window

    limit = IN_PROCESS_MAX_BYTES if in_process_max_bytes is None else in_process_max_bytes
    t0 = time.perf_counter()
    edges = reference_edges(reference, [c for c, k in kinds.items() if k == "numeric"])
    summary = summarize_window(str(log), "credit", "1", schema.feature_names,
                               {**kinds, "prediction": "categorical"}, edges,
                               in_process_max_bytes=limit)
    t_summary = time.perf_counter() - t0
    result = compare_samples(reference, summary.samples, kinds, DriftConfig())
    t_total = time.perf_counter() - t0
    return result, {"summarize_window": t_summary, "read_and_compute": t_total,
                    "rows": summary.rows}


def run_scenario(name: str, args, tmp: Path, evidently: Path) -> dict:
    schema, reference, current = make_data(args.rows, args.shift, args.seed, name)
    kinds = {c.name: c.kind for c in schema.columns}
    ref_path, cur_path = tmp / f"{name}-reference.parquet", tmp / f"{name}-current.parquet"
    pq.write_table(pa.Table.from_pandas(reference, preserve_index=False), ref_path)
    pq.write_table(pa.Table.from_pandas(current, preserve_index=False), cur_path)

    t0 = time.perf_counter()
    ref_table, cur_table = pq.read_table(ref_path), pq.read_table(cur_path)
    t_read = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = compare(ref_table, cur_table, kinds, DriftConfig())
        times.append(time.perf_counter() - t0)

    ray_data = None
    if not args.skip_ray_data:
        import ray

        from raylane.monitoring.reading import read_window

        write_log(current, schema, tmp / f"{name}-log")
        t0 = time.perf_counter()
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False)
        t_init = time.perf_counter() - t0
        ray_data = {"ray_init": t_init}
        from raylane.monitoring.reading import log_files

        ray_data["log_bytes"] = log_files(str(tmp / f"{name}-log")).size
        # The monitor's path as it runs on this log, then forced through Ray Data (counted
        # block by block where the blocks lie): first cold (the scenario's first Ray Data
        # job), then warm.
        for run, limit in (("monitor", None), ("monitor_ray_data_cold", 0),
                           ("monitor_ray_data_warm", 0)):
            monitor, seconds = monitor_path(tmp / f"{name}-log", schema, ref_table, kinds,
                                            limit)
            assert [c.drift for c in monitor.columns] == [c.drift for c in ours.columns]
            assert seconds["rows"] == args.rows
            ray_data[run] = seconds
        t0 = time.perf_counter()
        window = read_window(str(tmp / f"{name}-log"), "credit", "1", schema.feature_names)
        t_read_log = time.perf_counter() - t0
        via_log = compare(ref_table, window, kinds, DriftConfig())
        t_total = time.perf_counter() - t0
        assert window.num_rows == args.rows
        assert [c.drift for c in via_log.columns] == [c.drift for c in ours.columns]
        ray_data.update({"read_window": t_read_log, "read_and_compute": t_total})

    spec = tmp / "spec.json"
    spec.write_text(json.dumps({"numeric": schema.numeric, "categorical": schema.categorical}))
    ev_out = tmp / f"{name}-evidently.json"
    t0 = time.perf_counter()
    subprocess.run([str(evidently), str(ROOT / "benchmarks" / "evidently_drift.py"),
                    str(ref_path), str(cur_path), str(spec), str(ev_out)], check=True)
    t_subprocess = time.perf_counter() - t0
    ev = json.loads(ev_out.read_text())

    columns, agree = {}, True
    for c in ours.columns:
        e = ev["columns"][c.name]
        same = c.method == e["method"] and c.drift == e["drift"]
        agree &= same
        columns[c.name] = {
            "kind": c.kind, "method": c.method, "evidently_method": e["method"],
            "score": c.score, "evidently_score": e["score"],
            "relative_difference": abs(c.score - e["score"]) / max(abs(e["score"]), 1e-12),
            "threshold": c.threshold, "drift": c.drift, "evidently_drift": e["drift"],
            "agree": same}
    agree &= ours.dataset_drift == ev["dataset"]["dataset_drift"]
    compute = statistics.median(times)
    evidently_total = ev["seconds"]["report"] + ev["seconds"]["read"]
    monitor = None
    if ray_data:
        monitor = {run: evidently_total / ray_data[run]["read_and_compute"]
                   for run in ("monitor", "monitor_ray_data_cold", "monitor_ray_data_warm")}
        monitor["monitor_ray_data_cold_with_ray_init"] = evidently_total / (
            ray_data["ray_init"] + ray_data["monitor_ray_data_cold"]["read_and_compute"])
    return {
        "rows": {"reference": len(reference), "current": len(current)},
        "raylane": {"compute_s": compute, "compute_runs_s": times, "read_s": t_read,
                    "read_and_compute_s": t_read + compute, "ray_data": ray_data,
                    "drifted_columns": ours.drifted_columns, "dataset_drift": ours.dataset_drift},
        "evidently": {"report_s": ev["seconds"]["report"], "read_s": ev["seconds"]["read"],
                      "import_s": ev["seconds"]["import"], "subprocess_s": t_subprocess,
                      "version": ev["evidently"], "pandas": ev["pandas"],
                      "dataset": ev["dataset"]},
        "speedup_compute": ev["seconds"]["report"] / compute,
        "speedup_read_and_compute": (ev["seconds"]["report"] + ev["seconds"]["read"])
        / (t_read + compute),
        "speedup_monitor_vs_evidently_read_and_report": monitor,
        "decisions_agree": bool(agree),
        "max_relative_score_difference": max(c["relative_difference"]
                                             for c in columns.values()),
        "columns": columns,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shift", default="Income=1.3", help="COLUMN=FACTOR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scenarios", default="integral,continuous,small_reference")
    parser.add_argument("--skip-ray-data", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "drift.json"))
    args = parser.parse_args(argv)
    column, _, factor = args.shift.partition("=")
    args.shift = (column, float(factor))
    evidently = evidently_python()
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                      "load_average_start": [round(x, 2) for x in os.getloadavg()]},
           "args": {"rows": args.rows, "shift": args.shift, "seed": args.seed,
                    "repeats": args.repeats}, "scenarios": {}}
    try:
        with tempfile.TemporaryDirectory(prefix="raylane-bench-drift-") as tmp:
            for name in args.scenarios.split(","):
                out["scenarios"][name] = run_scenario(name, args, Path(tmp), evidently)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    out["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for name, s in out["scenarios"].items():
        r, e = s["raylane"], s["evidently"]
        print(f"{name}: {s['rows']['current']:,} rows; raylane compute {r['compute_s']:.2f} s "
              f"(read+compute {r['read_and_compute_s']:.2f} s"
              + (f", read_window path {r['ray_data']['read_and_compute']:.2f} s, monitor "
                 f"path {r['ray_data']['monitor']['read_and_compute']:.2f} s, through Ray Data "
                 f"cold {r['ray_data']['monitor_ray_data_cold']['read_and_compute']:.2f} s "
                 f"warm {r['ray_data']['monitor_ray_data_warm']['read_and_compute']:.2f} s "
                 f"(ray.init {r['ray_data']['ray_init']:.2f} s)" if r["ray_data"] else "")
              + f") vs Evidently report {e['report_s']:.2f} s (read {e['read_s']:.2f} s): "
              f"{s['speedup_compute']:.1f}x; decisions agree: {s['decisions_agree']}; "
              f"drifted {r['drifted_columns']}")
    print(f"results: {args.out}")
    return 0 if all(s["decisions_agree"] for s in out["scenarios"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
