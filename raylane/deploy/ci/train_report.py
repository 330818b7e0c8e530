"""Train on a Ray cluster with a pull request's code and write the comment for the PR
(train-report.yml).

    RAY_AUTH_TOKEN=... python -m raylane.deploy.ci.train_report --address https://ray.example.com \
        --out comment.md [--config tune_configs/credit_xgboost.yaml] [--pr 42] \
        [--set key=value ...] [--mlflow-ui https://mlflow.example.com] [--commit SHA]

Submits ``python -m ray_jobs.train_pipeline`` through the Job Submission SDK with the working
directory (the PR's checkout) as the job's working_dir (excludes of ray_jobs/runtime_env.yaml),
waits, and renders the job's summary (best trial, holdout metrics, gates, the decision against
the champion, the MLflow run) as Markdown. With ``--pr N`` the run goes to the experiment and
registered model ``raylane-pr-N``: nothing a pull request trains can become the served champion.
The token comes from ``$RAY_AUTH_TOKEN`` and is sent as a Bearer header; no token file is read.

Exit codes: 0 the job succeeded (comment written), 1 it failed or timed out (a comment saying
so, with the log's tail, is written too), 2 bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
TITLE = "Raylane training summary"
_ROW = re.compile(r"^  (.{28}) (.*)$")


@dataclass
class Summary:
    """The training job's summary table (raylane.training.summary.render), parsed back."""

    rows: dict[str, str] = field(default_factory=dict)
    holdout: list[tuple[str, str, str, str]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def parse_summary(log: str) -> Summary:
    """The last summary in a job's log; ValueError when there is none."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == TITLE]
    if not starts:
        raise ValueError("the job's log has no training summary")
    summary, in_table = Summary(), False
    for line in lines[starts[-1] + 2:]:
        if line.startswith("Look next:") or line.startswith("=" * 72):
            break
        if line.startswith("  holdout metric"):
            in_table = True
            continue
        if in_table:
            if not line.strip():
                in_table = False
                continue
            cells = line.split()
            summary.holdout.append((cells[0], cells[1], cells[2],
                                    cells[3] if len(cells) > 3 else ""))
            continue
        row = _ROW.match(line)
        if not row:
            continue
        label, value = row.group(1).strip(), row.group(2).strip()
        if not label and value.startswith("- "):
            summary.reasons.append(value[2:])
        elif label:
            summary.rows[label] = value
    return summary


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def mlflow_link(run: str, mlflow_ui: str | None) -> str:
    """``<run id> at <tracking uri>`` as Markdown, a link when the UI's URL is known."""
    run_id, _, uri = run.partition(" at ")
    if mlflow_ui:
        return f"[`{run_id}`]({mlflow_ui.rstrip('/')}/#/runs/{run_id})"
    return f"`{run_id}` at `{uri}`" if uri else f"`{run_id}`"


def render_markdown(summary: Summary, job_id: str, config: str, commit: str | None = None,
                    mlflow_ui: str | None = None) -> str:
    rows = summary.rows
    head = f"Ray job `{job_id}` succeeded" + (f" on `{commit[:12]}`" if commit else "")
    out = [f"### Raylane training report: `{config}`", "", head + ".", "",
           "| best trial | |", "|---|---|"]
    for label, value in rows.items():
        if label in ("trials", "positive class", "best params") or label.startswith("best "):
            out.append(f"| {_cell(label)} | {_cell(value)} |")
    out += ["", "| holdout metric | model | baseline | champion |", "|---|---:|---:|---:|"]
    out += [f"| {m} | {v} | {b} | {c or ''} |" for m, v, b, c in summary.holdout]
    out += ["", f"**Gates:** {rows.get('gates', 'n/a')}. "
                f"**ONNX parity:** {rows.get('ONNX parity', 'n/a')}. "
                f"**Diagnosis:** {rows.get('diagnosis', 'n/a')}.", "",
            f"**Against the champion:** registered `{rows.get('registered', 'n/a')}`, "
            f"alias `{rows.get('alias', 'n/a')}`"]
    out += [f"- {_cell(reason)}" for reason in summary.reasons]
    out += ["", f"**MLflow run:** {mlflow_link(rows.get('MLflow run', 'n/a'), mlflow_ui)} "
                f"(took {rows.get('took', 'n/a')})", ""]
    return "\n".join(out)


def render_failure(job_id: str, status: str, config: str, log: str) -> str:
    tail = "\n".join(log.splitlines()[-40:]).replace("```", "'''")
    return "\n".join([f"### Raylane training report: `{config}`", "",
                      f"Ray job `{job_id}` ended **{status}**. The log's last lines:", "",
                      "```", tail, "```", ""])


def runtime_env(working_dir: Path) -> dict:
    spec = yaml.safe_load((working_dir / "ray_jobs" / "runtime_env.yaml").read_text())
    return {"working_dir": str(working_dir), "excludes": spec.get("excludes", []),
            "env_vars": spec.get("env_vars", {})}


def entrypoint(config: str, overrides: list[str], pr: int | None) -> str:
    argv = ["python", "-m", "ray_jobs.train_pipeline", "--config", config]
    if pr is not None:
        overrides = [f"mlflow.experiment=raylane-pr-{pr}",
                     f"mlflow.registered_model=raylane-pr-{pr}", *overrides]
    for item in overrides:
        argv += ["--set", item]
    return shlex.join(argv)


def run_job(address: str, token: str | None, entry: str, working_dir: Path,
            timeout: float, poll: float = 2.0) -> tuple[str, str, str]:
    """Submit and wait: (job id, final status, whole log)."""
    from ray.job_submission import JobSubmissionClient

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = JobSubmissionClient(address, headers=headers)
    job_id = client.submit_job(entrypoint=entry, runtime_env=runtime_env(working_dir))
    print(f"submitted Ray job {job_id}: {entry}", flush=True)
    deadline = time.monotonic() + timeout
    while (status := str(client.get_job_status(job_id))) not in TERMINAL:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            return job_id, f"TIMED OUT after {timeout:.0f} s (stopped)", \
                client.get_job_logs(job_id)
        time.sleep(poll)
    return job_id, status, client.get_job_logs(job_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="the Ray dashboard's URL")
    parser.add_argument("--out", required=True, type=Path, help="where the Markdown goes")
    parser.add_argument("--config", default="tune_configs/credit_xgboost.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        metavar="KEY=VALUE", help="config override for the job (repeatable)")
    parser.add_argument("--pr", type=int, help="pull request number: its own experiment/model")
    parser.add_argument("--mlflow-ui", help="MLflow UI URL for the run link")
    parser.add_argument("--commit", help="the commit trained, shown in the comment")
    parser.add_argument("--working-dir", type=Path, default=Path("."))
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    working_dir = args.working_dir.resolve()
    if not (working_dir / args.config).is_file():
        print(f"error: --config: {args.config} is not a file in {working_dir}", file=sys.stderr)
        return 2
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: --set: expected KEY=VALUE, got {bad}", file=sys.stderr)
        return 2
    job_id, status, log = run_job(args.address, os.environ.get("RAY_AUTH_TOKEN") or None,
                                  entrypoint(args.config, args.overrides, args.pr),
                                  working_dir, args.timeout)
    print(log, end="", flush=True)
    text = ""
    if status == "SUCCEEDED":
        try:
            text = render_markdown(parse_summary(log), job_id, args.config, args.commit,
                                   args.mlflow_ui)
        except ValueError as exc:
            status, text = str(exc), ""
    if status != "SUCCEEDED" or not text:
        args.out.write_text(render_failure(job_id, status, args.config, log))
        print(f"error: Ray job {job_id}: {status}", file=sys.stderr)
        return 1
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
