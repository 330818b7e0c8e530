"""The ``raylane.*`` tag names live in raylane/model/tags.py only: every constant there is
used, and no other source spells a tag name as a string (an AST scan, docstrings aside)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raylane.model import tags

ROOT = Path(__file__).resolve().parents[3]
TAGS_FILE = ROOT / "raylane" / "model" / "tags.py"
SOURCES = sorted(p for d in ("raylane", "ray_jobs", "console") for p in (ROOT / d).rglob("*.py")
                 if p != TAGS_FILE)
NAMES = {k: v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str)}
TOKEN = re.compile(r"raylane(?:\.[A-Za-z_]+)++\.?+(?!/)")  # raylane.io/x: a label


def _is_module(token: str) -> bool:
    try:
        return importlib.util.find_spec(token.rstrip(".")) is not None
    except ModuleNotFoundError:
        return False


def _is_tag(token: str) -> bool:
    """A tag's value or prefix, or a dotted raylane name that is no module (a new tag)."""
    if token in NAMES.values() or token.startswith((tags.HOLDOUT_PREFIX, tags.JUDGING_PREFIX)):
        return True
    return not _is_module(token)


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants, f-string parts included, docstrings left out."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def _strings_in_a_fresh_interpreter(paths: list[Path]) -> list[list[tuple[int, str]]]:
    """Each file's strings, parsed in a child process: CPython 3.11 keeps the AST builder's
    recursion counter per interpreter, so a thread of an in-process Ray session parsing at the
    same moment fails ``ast.parse`` with "SystemError: AST constructor recursion depth
    mismatch"."""
    scan = ("import ast, json, sys\n"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from test_tags import _strings\n"
            "print(json.dumps([_strings(ast.parse(open(p).read())) for p in sys.argv[1:]]))")
    out = subprocess.run([sys.executable, "-c", scan, *map(str, paths)], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    return json.loads(out)


def test_no_source_spells_a_tag_name():
    strings = _strings_in_a_fresh_interpreter(SOURCES)
    raw = [f"{path.relative_to(ROOT)}:{line}: {token!r}"
           for path, found in zip(SOURCES, strings, strict=True) for line, text in found
           for token in TOKEN.findall(text) if _is_tag(token)]
    assert raw == [], "use raylane.model.tags:\n" + "\n".join(raw)


def test_the_scan_finds_a_raw_tag():
    tree = ast.parse('def f(t):\n    """raylane.decision in a docstring is fine."""\n'
                     '    return t["raylane.decision"], f"raylane.holdout.{t}", "raylane.new"\n')
    found = [token for _, text in _strings(tree) for token in TOKEN.findall(text)
             if _is_tag(token)]
    assert sorted(found) == ["raylane.decision", "raylane.holdout.", "raylane.new"]


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_tag_name_is_used(name):
    pattern = re.compile(rf"\b{name}\b")
    assert any(pattern.search(p.read_text()) for p in SOURCES), f"{name} is never used"


def test_the_values_are_unique_and_namespaced():
    assert len(set(NAMES.values())) == len(NAMES)
    assert all(v.startswith("raylane.") for v in NAMES.values())


def test_the_airflow_dag_reads_tags_by_their_stored_names():
    """The DAG runs in Airflow's own environment without raylane: it spells the names, and
    they must be ones raylane writes."""
    dag = ast.parse((ROOT / "airflow" / "dags" / "raylane_ct.py").read_text())
    spelled = {token for _, text in _strings(dag) for token in TOKEN.findall(text)
               if not _is_module(token)}
    assert spelled and spelled <= set(NAMES.values()), spelled - set(NAMES.values())
