"""The command line every raylane job shares (ray_jobs/*.py): ``--config``, ``--set``, times,
logging and exit codes.

Exit codes: 0 done; 2 bad input (a config, data, argument or model the job cannot use: one
``error:`` line on stderr); 3 a failed ONNX parity check (nothing was registered); 130 / 143
stopped by SIGINT / SIGTERM (one line saying where, see :mod:`raylane.training.interrupts`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from raylane.config import ConfigError
from raylane.data.read import DataError
from raylane.release.export import ParityError
from raylane.training import interrupts

EXIT_BAD_INPUT = 2
EXIT_PARITY = 3


def job_parser(doc: str, set_example: str) -> argparse.ArgumentParser:
    """A parser with the options every job takes: ``--config`` and repeatable ``--set``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML pipeline config")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a config key, e.g. {set_example} (repeatable)")
    return parser


def time_arg(text: str) -> datetime:
    """An ISO time from the command line (UTC when it names no zone)."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO time, e.g. 2026-01-31T12:00, got "
                                         f"{text!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def add_window(parser: argparse.ArgumentParser, what: str = "window") -> None:
    """``--since`` / ``--until``: the prediction log's window, as times."""
    parser.add_argument("--since", type=time_arg,
                        help=f"{what} start: predictions logged at or after (ISO time, UTC if "
                             "naive)")
    parser.add_argument("--until", type=time_arg,
                        help=f"{what} end: predictions logged before (default: now)")


def run_job(
    parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None, *, stops: bool = True,
    bad_input: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse ``argv``, set up logging and run ``body(args)``, turning the job's failures into
    exit codes (module docstring). With ``stops`` a stop at any point, parsing included, ends
    cleanly. ``bad_input``: further exceptions that mean exit 2."""
    if stops:
        interrupts.install()  # first: a stop at any stage ends cleanly
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return body(args)
    except interrupts.Stopped as stop:
        return interrupts.finish(stop)
    except (ConfigError, DataError, *bad_input) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARITY
