"""uv.lock is what `make install`, the Dockerfile and CI install: it must be the lock of
pyproject.toml's dependencies as they are now (run `uv lock` after changing them)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def _normalized(req: Requirement, extra: str | None) -> tuple:
    return (req.name.lower(), tuple(sorted(req.extras)), str(req.specifier), extra)


def test_the_lock_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_normalized(Requirement(d), None) for d in project["dependencies"]}
    for extra, deps in project["optional-dependencies"].items():
        wanted |= {_normalized(Requirement(d), extra) for d in deps}
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    (raylane,) = [p for p in lock["package"] if p["name"] == "raylane"]
    locked = set()
    for dep in raylane["metadata"]["requires-dist"]:
        marker = dep.get("marker", "")
        extra = marker.split("==")[1].strip(" '\"") if "extra ==" in marker else None
        locked.add((dep["name"].lower(), tuple(sorted(dep.get("extras", []))),
                    str(Requirement(f"x{dep.get('specifier', '')}").specifier), extra))
    assert locked == wanted, "uv.lock is stale: run `uv lock` (.venv/bin/uv lock)"
    assert sorted(raylane["metadata"]["provides-extras"]) == sorted(
        project["optional-dependencies"])


def test_install_uses_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "$(VENV)/.installed: pyproject.toml uv.lock" in makefile
    assert "--require-hashes -r $(VENV)/requirements.lock.txt" in makefile
    assert "uv export -q --frozen" in makefile.replace("$(UV)", "uv")
