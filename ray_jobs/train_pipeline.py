"""Ray job: tune, track, export and register a tabular model.

    python -m ray_jobs.train_pipeline --config tune_configs/credit_xgboost.yaml \
        [--set tune.num_samples=40 --set data.path=/data/table.parquet] [--resume]

SIGINT (Ctrl-C) or SIGTERM (`ray job stop`) at any stage exits 130 / 143 with one line saying
where it stopped and whether ``--resume`` can continue; a second signal exits at once.

Runs on the Ray cluster it is started on (``ray job submit``) or on a new local one.
"""

from __future__ import annotations

import argparse
import logging
import sys

from raylane.config import ConfigError, load_config
from raylane.data.read import DataError
from raylane.release.export import ParityError
from raylane.training import interrupts


def main(argv: list[str] | None = None) -> int:
    # first: a stop at any stage ends cleanly (see raylane.training.interrupts)
    interrupts.install()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML pipeline config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. tune.num_samples=40 (repeatable)")
    parser.add_argument("--resume", action="store_true", help="resume an interrupted search")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return _run(args)
    except interrupts.Stopped as stop:
        return interrupts.finish(stop)


def _run(args: argparse.Namespace) -> int:
    with interrupts.stage("data load"):
        from raylane.tracking.experiments import check_store
        from raylane.training.job import load_data, run_pipeline
        from raylane.training.summary import render

        try:
            config = load_config(args.config, args.set)
            # a store in Ray's uploaded working dir would vanish with it: refuse before any work
            check_store(config.tracking_uri)
            # a bad path, target or column fails here, before Ray (the data-parallel job reads
            # its table with Ray Data, never whole here)
            loaded = load_data(config) if config.tune.workers_per_trial == 1 else None
        except (ConfigError, DataError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        result = run_pipeline(config, resume=args.resume, loaded=loaded)
    except interrupts.ResumeError as exc:
        print(f"error: cannot resume: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, DataError) as exc:  # the artifact location (see check_store); the
        print(f"error: {exc}", file=sys.stderr)  # data-parallel job's data, read with Ray Data
        return 2
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
