"""Ray job: continuous training. Monitor the served model's traffic; when it drifts (or with
--force), retrain on the config's data plus newly labelled rows, judge the challenger fairly
against the champion and promote it only if it wins.

    python -m ray_jobs.continuous_training --config tune_configs/credit_xgboost.yaml \
        --predictions <prediction log dir or URI> --new-data <path, glob or URI> \
        [--labels <table of prediction_id + label>] [--force] [--set key=value ...]

Unset, --predictions, --new-data and --labels default to $RAYLANE_PREDICTION_LOG (where the
serving replicas log: the KubeRay jobs read the platform's ConfigMap raylane-prediction-log, as the
RayService does), $RAYLANE_NEW_DATA_URI and $RAYLANE_LABELS_URI (ConfigMap
raylane-continuous-training).

Exit codes: 0 done (whatever the decision), 2 bad config or data, 3 failed ONNX parity check,
130 / 143 stopped by SIGINT / SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from raylane.config import ConfigError, load_config
from raylane.data.read import DataError
from raylane.release.export import ParityError
from raylane.training import interrupts

# Each option's environment variables, first set (and non-empty) wins.
ENV_DEFAULTS = {
    "predictions": ("RAYLANE_PREDICTION_LOG",),
    "new_data": ("RAYLANE_NEW_DATA_URI",),
    "labels": ("RAYLANE_LABELS_URI",),
}


def _from_env(option: str) -> str | None:
    return next((os.environ[v] for v in ENV_DEFAULTS[option] if os.environ.get(v)), None)


def main(argv: list[str] | None = None) -> int:
    interrupts.install()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML pipeline config")
    parser.add_argument("--predictions", help="prediction log: directory, glob or URI")
    parser.add_argument("--new-data", help="newly labelled rows: path, glob or URI (CSV/Parquet)")
    parser.add_argument("--labels", help="labels that arrived later: prediction_id + target")
    parser.add_argument("--force", action="store_true", help="retrain without asking the monitor")
    parser.add_argument("--model-uri", help="model to monitor (default: <registered_model>"
                                            "@champion)")
    parser.add_argument("--since", help="monitor only predictions logged at or after this time")
    parser.add_argument("--until", help="monitor only predictions logged before this time")
    parser.add_argument("--report", help="also write the drift report (JSON) here")
    parser.add_argument("--monitor-only", action="store_true",
                        help="stop after the monitor's decision (an orchestrator's first task)")
    parser.add_argument("--monitoring-run-id",
                        help="the monitor already said retrain in this MLflow run: link to it "
                             "and retrain without monitoring again")
    parser.add_argument("--result", help="write the CT result (JSON) here")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. tune.num_samples=40 (repeatable)")
    args = parser.parse_args(argv)
    for option in ENV_DEFAULTS:
        if not getattr(args, option):
            setattr(args, option, _from_env(option))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _run(args)
    except interrupts.Stopped as stop:
        return interrupts.finish(stop)


def _run(args: argparse.Namespace) -> int:
    from raylane.continuous import render, run_continuous_training

    try:
        config = load_config(args.config, args.set)
        result = run_continuous_training(
            config, predictions=args.predictions, new_data=args.new_data, labels=args.labels,
            force=args.force, model_uri=args.model_uri, since=args.since, until=args.until,
            report_path=args.report, monitoring_run_id=args.monitoring_run_id,
            monitor_only=args.monitor_only)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(render(result))
    if args.result:
        with open(args.result, "w") as f:
            json.dump(result.to_dict(), f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
