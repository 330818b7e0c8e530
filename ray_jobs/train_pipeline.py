"""Ray job: tune, track, export and register a tabular model.

    python -m ray_jobs.train_pipeline --config tune_configs/credit_xgboost.yaml \
        [--set tune.num_samples=40 --set data.path=/data/table.parquet] [--resume]

SIGINT (Ctrl-C) or SIGTERM (`ray job stop`) at any stage exits 130 / 143 with one line saying
where it stopped and whether ``--resume`` can continue; a second signal exits at once.

Runs on the Ray cluster it is started on (``ray job submit``) or on a new local one.
"""

from __future__ import annotations

import argparse
import sys

from raylane.config import load_config
from raylane.training import interrupts
from raylane.training.cli import EXIT_BAD_INPUT, job_parser, run_job


def main(argv: list[str] | None = None) -> int:
    parser = job_parser(__doc__, "tune.num_samples=40")
    parser.add_argument("--resume", action="store_true", help="resume an interrupted search")
    return run_job(parser, _run, argv)


def _run(args: argparse.Namespace) -> int:
    with interrupts.stage("data load"):
        from raylane.tracking.experiments import check_store
        from raylane.training.job import load_data, run_pipeline
        from raylane.training.summary import render

        config = load_config(args.config, args.set)
        # a store in Ray's uploaded working dir would vanish with it: refuse before any work
        check_store(config.tracking_uri)
        # a bad path, target or column fails here, before Ray (the data-parallel job reads its
        # table with Ray Data, never whole here)
        loaded = load_data(config) if config.tune.workers_per_trial == 1 else None
    try:
        result = run_pipeline(config, resume=args.resume, loaded=loaded)
    except interrupts.ResumeError as exc:
        print(f"error: cannot resume: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
