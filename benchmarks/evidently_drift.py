"""Evidently's DataDriftPreset on two Parquet files, timed; run in Evidently's own environment.

    .venv-evidently/bin/python benchmarks/evidently_drift.py REF.parquet CUR.parquet SPEC OUT

SPEC (JSON) names the numerical and categorical columns. OUT (JSON) gets the wall times (read,
report) and, per column, Evidently's method, score, threshold and decision (its test status).
Only Evidently, pandas and the standard library are imported: Evidently 0.7.23 needs pandas < 3,
raylane pandas 3.
"""

from __future__ import annotations

import json
import sys
import time

METHODS = {  # Evidently's display names -> the stat test names raylane reports
    "K-S p_value": "ks", "Wasserstein distance (normed)": "wasserstein",
    "chi-square p_value": "chisquare", "Z-test p_value": "z",
    "Jensen-Shannon distance": "jensenshannon", "PSI": "psi",
}


def main(ref_path: str, cur_path: str, spec_path: str, out_path: str) -> None:
    t0 = time.perf_counter()
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    t_import = time.perf_counter() - t0
    with open(spec_path) as f:
        spec = json.load(f)
    t0 = time.perf_counter()
    reference, current = pd.read_parquet(ref_path), pd.read_parquet(cur_path)
    t_read = time.perf_counter() - t0
    definition = DataDefinition(numerical_columns=spec["numeric"],
                                categorical_columns=spec["categorical"])
    t0 = time.perf_counter()
    snapshot = Report([DataDriftPreset(drift_share=spec.get("drift_share", 0.5))],
                      include_tests=True).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition))
    t_report = time.perf_counter() - t0
    result = snapshot.dict()
    columns, dataset = {}, {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            columns[config["column"]] = {"method": METHODS.get(config["method"], config["method"]),
                                         "score": metric["value"],
                                         "threshold": config["threshold"]}
        elif config["type"].endswith("DriftedColumnsCount"):
            dataset = {"drifted": metric["value"]["count"], "drift_share": metric["value"]["share"]}
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith("ValueDrift"):
            columns[params["column"]]["drift"] = test["status"] == "FAIL"
        elif params["type"].endswith("DriftedColumnsCount"):
            dataset["dataset_drift"] = test["status"] == "FAIL"
    out = {"evidently": evidently.__version__, "pandas": pd.__version__,
           "rows": {"reference": len(reference), "current": len(current)},
           "seconds": {"import": t_import, "read": t_read, "report": t_report},
           "columns": columns, "dataset": dataset}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main(*sys.argv[1:5])
