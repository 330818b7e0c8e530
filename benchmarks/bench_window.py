"""The monitor's window at scale: a prediction log of N rows summarized block by block (the
monitor's path without labels), its time and the driver's peak RSS, for several N.

    python -m benchmarks.bench_window --rows 1000000 10000000 30000000 --out /tmp/window.json

For each N a Ray Data pipeline (``ray.data.range(N).map_batches(gen).write_parquet``) writes a
log in the service's format (``timestamp``, ``model_name``, ``model_version``, the ``input``
struct, ``prediction``; as ``bench_drift`` writes its log): rows drawn (seeded) from the bundled
credit table as the model sees it, ``Income`` multiplied by 1.3, numbers as float32. Then a child
process starts Ray and runs what ``raylane.monitoring.monitor`` runs on the window
(``reading.window_dataset``, ``window.summarize_dataset``, ``drift.compare_samples`` against the
credit table as reference) and reports its times and its own peak RSS (``ru_maxrss``): the
driver's, which holds the per-column counts, not the rows (Ray's worker processes are not in
it). Results are written after each N, so a cut-off run keeps the sizes it finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
ROWS_PER_BLOCK = 1_000_000
SHIFT = ("Income", 1.3)


def reference():
    """The credit table as the model sees it (Arrow, missing categories as nulls) and its
    schema."""
    from raylane.data.read import infer_schema, prepare_features, read_table
    from raylane.model.schema import MISSING_CATEGORY

    frame = read_table(str(ROOT / "data" / "credit_data.csv"))
    schema = infer_schema(frame, "Status", None)
    ref = prepare_features(frame[frame["Status"].notna()], schema).reset_index(drop=True)
    for name in schema.categorical:
        ref[name] = ref[name].where(ref[name] != MISSING_CATEGORY, None)
    return schema, pa.Table.from_pandas(ref, preserve_index=False)


def log_rows(batch: dict[str, np.ndarray], source: pa.Table, numeric: list[str],
             start_ms: int, noise: bool = False) -> pa.Table:
    """Log rows for the ids in ``batch`` (seeded by the first id); ``noise``: uniform noise in
    [-0.5, 0.5) on every number, so distinct values grow with the rows."""
    from raylane.model.schema import MISSING_CATEGORY

    ids = batch["id"]
    rng = np.random.default_rng(int(ids[0]))
    rows = source.take(pa.array(rng.integers(0, source.num_rows, len(ids))))
    fields = []
    for name in source.column_names:
        column = rows.column(name).combine_chunks()
        if name in numeric:
            factor = SHIFT[1] if name == SHIFT[0] else 1.0
            column = pc.multiply(column.cast(pa.float64()), factor)
            if noise:
                column = pc.add(column, pa.array(rng.uniform(-0.5, 0.5, len(ids))))
            column = column.cast(pa.float32())
        else:
            column = column.cast(pa.string()).fill_null(MISSING_CATEGORY)
        fields.append(column)
    n = len(ids)
    return pa.table({
        "timestamp": pa.array(start_ms + ids.astype(np.int64)).cast(pa.timestamp("ms", tz="UTC")),
        "model_name": pa.array(["credit"] * n), "model_version": pa.array(["1"] * n),
        "input": pa.StructArray.from_arrays(fields, names=source.column_names),
        "prediction": pa.array(np.where(rng.random(n) < 0.7, "good", "bad")),
    })


def write_log(rows: int, where: Path, noise: bool) -> float:
    import ray

    schema, source = reference()
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.range(rows, override_num_blocks=max(1, rows // ROWS_PER_BLOCK)).map_batches(
            log_rows, batch_format="numpy", batch_size=ROWS_PER_BLOCK,
            fn_kwargs={"source": source, "numeric": schema.numeric,
                       "start_ms": int(time.time() * 1000), "noise": noise}) \
            .write_parquet(str(where))
    finally:
        ray.shutdown()
    return time.perf_counter() - started


def summarize(log: Path) -> dict:
    """The monitor's path on ``log`` (run in a child process); its figures."""
    import ray

    from raylane.config import DriftConfig
    from raylane.monitoring.drift import compare_samples
    from raylane.monitoring.reading import window_dataset
    from raylane.monitoring.window import reference_edges, summarize_dataset

    schema, ref = reference()
    kinds = {c.name: c.kind for c in schema.columns}
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    t_init = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        dataset = window_dataset(str(log), "credit", "1", schema.feature_names)
        edges = reference_edges(ref, schema.numeric)
        summary = summarize_dataset(dataset, {**kinds, "prediction": "categorical"}, edges)
        t_summary = time.perf_counter() - t0
        drift = compare_samples(ref, summary.samples, kinds, DriftConfig())
        t_total = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"rows": summary.rows, "ray_init_s": t_init, "summarize_s": t_summary,
            "summarize_and_compare_s": t_total, "rows_per_s": summary.rows / t_summary,
            "drifted_columns": drift.drifted_columns, "binned_columns": sorted(summary.binned),
            "distinct_values": {k: len(s.counts.values) for k, s in summary.samples.items()},
            # Linux reports ru_maxrss in KiB
            "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--noise", action="store_true",
                        help="continuous values: distinct values grow with the rows")
    parser.add_argument("--out", default=str(RESULTS / "window.json"))
    parser.add_argument("--summarize", help=argparse.SUPPRESS)  # the child's entry
    args = parser.parse_args(argv)
    if args.summarize:
        print(json.dumps(summarize(Path(args.summarize))))
        return 0

    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load_average_start": [round(x, 2) for x in os.getloadavg()]},
                 "rows_per_block": ROWS_PER_BLOCK, "noise": args.noise, "sizes": {}}
    for rows in args.rows:
        tmp = Path(tempfile.mkdtemp(prefix="raylane-bench-window-"))
        try:
            t_write = write_log(rows, tmp / "log", args.noise)
            size = sum(p.stat().st_size for p in (tmp / "log").rglob("*.parquet"))
            files = len(list((tmp / "log").rglob("*.parquet")))
            t0 = time.perf_counter()
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_window", "--summarize",
                 str(tmp / "log")], check=True, cwd=ROOT, capture_output=True, text=True)
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            figures["child_wall_s"] = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        assert figures["rows"] == rows, figures
        figures.update(write_log_s=t_write, log_files=files, log_mib=size / 2**20)
        out["sizes"][str(rows)] = figures
        out["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"{rows:,} rows ({files} files, {size / 2**20:.0f} MiB, written in "
              f"{t_write:.1f} s): summarized in {figures['summarize_s']:.1f} s "
              f"({figures['rows_per_s']:,.0f} rows/s; ray.init {figures['ray_init_s']:.1f} s), "
              f"driver peak RSS {figures['driver_peak_rss_mib']:.0f} MiB", flush=True)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
