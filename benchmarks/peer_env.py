"""A peer's own Python environment, for peers whose pins clash with raylane's (Evidently needs
pandas < 3, KServe pins its own FastAPI and protobuf)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def peer_python(venv: Path, pins: list[str]) -> Path:
    """The Python of ``venv``, created with uv and ``pins`` installed when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        uv = [sys.executable, "-m", "uv"]
        subprocess.run([*uv, "venv", "-q", "-p", "3.11", str(venv)], check=True)
        subprocess.run([*uv, "pip", "install", "-q", "-p", str(python), *pins], check=True)
    return python
