"""Where things are: the repo, this environment's console scripts, the bundled datasets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CREDIT_CSV = ROOT / "data" / "credit_data.csv"
DIAMONDS_CSV = Path(os.environ.get("RAYLANE_DIAMONDS_CSV", ROOT / "data" / "diamonds_sample.csv"))
