"""Ray job: drift and live performance of the served model, from its prediction log.

    python -m ray_jobs.monitor --config tune_configs/credit_xgboost.yaml \
        --predictions <dir or URI of the prediction log> [--labels <ids + labels table>] \
        [--report drift.json] [--since 2026-01-01T00:00] [--until ...] [--model-uri models:/m@a] \
        [--set monitoring.drift.drift_share=0.3]

Prints the decision (``retrain`` or ``none``) and its reasons; the full report goes to
``--report`` (a path or fsspec URI) and to a run in the monitoring experiment. Exit 0 whatever
the decision, 2 on a bad config, argument or a model without a reference profile.

A log past 32 MiB is read with Ray Data on the Ray cluster the job is started on (``ray job
submit``) or on a new local one; a smaller one is read in the job's own process, without Ray.
"""

from __future__ import annotations

import argparse
import sys

from raylane.config import load_config
from raylane.training.cli import add_window, job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, "monitoring.drift.drift_share=0.3")
    parser.add_argument("--predictions", required=True,
                        help="directory or URI of the prediction log (local, s3://, gs://...)")
    parser.add_argument("--labels", help="CSV/Parquet table with prediction_id and label")
    parser.add_argument("--report", help="write the JSON report here (path or URI)")
    add_window(parser)
    parser.add_argument("--model-uri", help="default: monitoring.model_uri or "
                        "models:/<registered_model>@champion")
    from raylane.model.store import ModelNotFoundError
    from raylane.monitoring.reference import ProfileNotFoundError

    return run_job(parser, _run, argv, stops=False,
                   bad_input=(ModelNotFoundError, ProfileNotFoundError, ValueError))


def _run(args: argparse.Namespace) -> int:
    from raylane.monitoring import run_monitor

    config = load_config(args.config, args.set)
    report = run_monitor(config, args.predictions, labels=args.labels,
                         model_uri=args.model_uri, since=args.since, until=args.until,
                         report_path=args.report)
    body = report.to_dict()
    print(f"monitor: {body['rows']} rows of {body['model']['name']} v{body['model']['version']}; "
          f"drifted columns: {', '.join(body['drifted_columns']) or 'none'} "
          f"(share {body['drift_share']:.2f}); decision: {report.decision}")
    for reason in report.reasons:
        print(f"  - {reason}")
    print(f"  MLflow run {report.run_id}" + (f"; report {args.report}" if args.report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
