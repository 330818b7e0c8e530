"""Score a table with a registered model on Ray Data; scored rows as Parquet under --output,
refused rows (with the reason the HTTP service would give) under --output/rejected/.

    python -m ray_jobs.batch_predict --model-uri models:/credit@champion \
        --input 's3://bucket/table/*.parquet' --output s3://bucket/scores [--id-column id]
"""

from __future__ import annotations

import argparse
import os
import sys

import ray

from raylane.batch.job import BATCH_SIZE, batch_predict, check_batch_size, check_locations
from raylane.data.read import DataError
from raylane.locations import LocationError, check_location
from raylane.model.store import ModelNotFoundError, load_registered_model


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (also what the RayJob manifest's entrypoint is checked against)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True, help="models:/<name>@<alias> or /<version>")
    parser.add_argument("--input", required=True, nargs="+", help="files, directories or globs")
    parser.add_argument("--output", required=True, help="a directory or URI for the Parquet")
    parser.add_argument("--id-column", help="the input column that identifies a row")
    parser.add_argument("--actors", type=int, default=0,
                        help="ONNX Runtime sessions in an actor pool; 0 (default): tasks on "
                             "every CPU, a session per worker process")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                        help=f"rows a session scores at a time (default {BATCH_SIZE})")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = args.input[0] if len(args.input) == 1 else args.input
    try:  # before the model is fetched or Ray started
        check_locations(spec, args.output)
        check_batch_size(args.batch_size)
        if args.tracking_uri != os.environ.get("MLFLOW_TRACKING_URI"):
            check_location("--tracking-uri", args.tracking_uri)
    except (LocationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        model = load_registered_model(args.model_uri, args.tracking_uri)
    except (ModelNotFoundError, ValueError) as exc:
        print(f"error: --model-uri: {exc}", file=sys.stderr)
        return 2
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS", "local"))
    try:
        result = batch_predict(spec, args.output, model, args.id_column, args.actors,
                               args.batch_size)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"scored {result.scored} rows, rejected {result.rejected} (model {model.name} "
          f"version {result.version}) -> {result.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
