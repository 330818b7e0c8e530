"""Ray job: tune, track, export and register a tabular model.

    python -m ray_jobs.train_pipeline --config tune_configs/credit_xgboost.yaml \
        [--set tune.num_samples=40 --set data.path=/data/table.parquet] [--resume]

Runs on the Ray cluster it is started on (``ray job submit``) or on a new local one.
"""

from __future__ import annotations

import argparse
import logging
import sys

from raylane.config import ConfigError, load_config
from raylane.data import DataError
from raylane.export import ParityError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML pipeline config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. tune.num_samples=40 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="resume an interrupted search")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from raylane.pipeline import load_data, run_pipeline
    from raylane.summary import render
    from raylane.tuning import SearchInterrupted

    try:
        config = load_config(args.config, args.set)
        loaded = load_data(config)  # a bad path, target or column fails here, before Ray starts
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_pipeline(config, resume=args.resume, loaded=loaded)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except SearchInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 130
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
