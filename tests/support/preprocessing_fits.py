"""Count fits of the shared preprocessing in every process of a local Ray, through a file.

``install`` patches ``ColumnTransformer.fit_transform`` (which ``fit`` calls too) so that each
fit appends ``<pid> <variant>`` to the file named by ``$RAYLANE_TEST_PREPROCESSING_FITS``. Run it
in the test process and, as Ray's ``worker_process_setup_hook``, in every Ray worker (trials).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "RAYLANE_TEST_PREPROCESSING_FITS"


def install() -> None:
    """Count this process's preprocessing fits (once per process; a no-op without ``ENV``)."""
    from sklearn.compose import ColumnTransformer

    path = os.environ.get(ENV)
    original = ColumnTransformer.fit_transform
    if not path or getattr(original, "counted", False):
        return

    def fit_transform(self, X, y=None, **params):
        numeric = dict((name, steps) for name, steps, _ in self.transformers).get("numeric")
        scaled = numeric is not None and "scale" in dict(numeric.steps)
        with open(path, "a") as out:
            out.write(f"{os.getpid()} {'scaled' if scaled else 'plain'}\n")
        return original(self, X, y, **params)

    fit_transform.counted = True  # type: ignore[attr-defined]
    ColumnTransformer.fit_transform = fit_transform


def fits(path: Path) -> list[tuple[int, str]]:
    """The fits counted so far: (process id, variant) each."""
    if not path.exists():
        return []
    return [(int(pid), variant) for pid, variant in
            (line.split() for line in path.read_text().splitlines())]
