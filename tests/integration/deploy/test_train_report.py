"""The train-report workflow's script (raylane.deploy.ci.train_report) against a real
`ray start --head` with token auth (empty HOME, the token passed explicitly): it submits the
training job with this checkout as working_dir through the Job Submission SDK, waits, and
renders the PR comment from the job's summary; compared with tests/snapshots/train_report.md
once run ids, paths and numbers are masked. A job that fails gives a comment saying so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import ROOT
from support.ray_auth import RayHead, token_ray_head  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
SNAPSHOT = ROOT / "tests" / "snapshots" / "train_report.md"
TINY = ["tune.num_samples=2", "tune.max_concurrent_trials=1", "tune.search_alg=random",
        "tune.scheduler.type=fifo", "model.params.n_estimators=20",
        "model.search_space.n_estimators=20", "gates.min_holdout.roc_auc=0.5"]


def report(head: RayHead, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path / "comment.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "HOME"))}
    env.update(HOME=str(head.home), RAY_AUTH_TOKEN=head.token)
    proc = subprocess.run(
        [sys.executable, "-m", "raylane.deploy.ci.train_report", "--address", head.url,
         "--out", str(out), "--pr", "7", "--commit", "deadbeefcafedeadbeef",
         "--mlflow-ui", "https://mlflow.example.com", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return proc, out.read_text() if out.exists() else ""


def masked(markdown: str, tmp_path: Path) -> str:
    text = markdown.replace(str(tmp_path), "<tmp>")
    text = re.sub(r"raysubmit_\w+", "<job>", text)
    text = re.sub(r"\b[0-9a-f]{32}\b", "<run>", text)
    return re.sub(r"\d+(\.\d+)?(e[-+]?\d+)?", "N", text)


def test_train_report_submits_waits_and_renders_the_comment(token_ray_head, tmp_path):  # noqa: F811
    overrides = [*TINY, f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
                 f"tune.storage_path={tmp_path / 'rr'}"]
    proc, comment = report(token_ray_head, tmp_path,
                           *[a for o in overrides for a in ("--set", o)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = masked(comment, tmp_path)
    if os.environ.get("RAYLANE_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(got)
    assert got == SNAPSHOT.read_text()
    assert "| roc_auc |" in comment and "registered `models:/raylane-pr-7/1`" in comment
    assert token_ray_head.token not in proc.stdout + proc.stderr + comment


def test_a_failed_job_gives_a_comment_saying_so(token_ray_head, tmp_path):  # noqa: F811
    proc, comment = report(token_ray_head, tmp_path, "--set", "data.target=NoSuchColumn")
    assert proc.returncode == 1
    assert re.search(r"Ray job `raysubmit_\w+` ended \*\*FAILED\*\*", comment), comment
    assert "NoSuchColumn" in comment  # the job's own error, in the log's tail
