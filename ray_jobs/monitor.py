"""Ray job: drift and live performance of the served model, from its prediction log.

    python -m ray_jobs.monitor --config tune_configs/credit_xgboost.yaml \
        --predictions <dir or URI of the prediction log> [--labels <ids + labels table>] \
        [--report drift.json] [--since 2026-01-01T00:00] [--until ...] [--model-uri models:/m@a] \
        [--set monitoring.drift.drift_share=0.3]

Prints the decision (``retrain`` or ``none``) and its reasons; the full report goes to
``--report`` (a path or fsspec URI) and to a run in the monitoring experiment. Exit 0 whatever
the decision, 2 on a bad config, argument or a model without a reference profile.

Runs on the Ray cluster it is started on (``ray job submit``) or on a new local one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime

from raylane.config import ConfigError, load_config


def _timestamp(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time, e.g. 2026-01-31T12:00, got "
                                         f"{text!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML pipeline config")
    parser.add_argument("--predictions", required=True,
                        help="directory or URI of the prediction log (local, s3://, gs://...)")
    parser.add_argument("--labels", help="CSV/Parquet table with prediction_id and label")
    parser.add_argument("--report", help="write the JSON report here (path or URI)")
    parser.add_argument("--since", type=_timestamp, help="window start (ISO time, UTC if naive)")
    parser.add_argument("--until", type=_timestamp, help="window end (default: now)")
    parser.add_argument("--model-uri", help="default: monitoring.model_uri or "
                        "models:/<registered_model>@champion")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. monitoring.drift.drift_share=0.3")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from raylane.model.store import ModelNotFoundError
    from raylane.monitoring import run_monitor
    from raylane.monitoring.reference import ProfileNotFoundError

    try:
        config = load_config(args.config, args.set)
        report = run_monitor(config, args.predictions, labels=args.labels,
                             model_uri=args.model_uri, since=args.since, until=args.until,
                             report_path=args.report)
    except (ConfigError, ModelNotFoundError, ProfileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
