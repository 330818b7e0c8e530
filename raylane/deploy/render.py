"""Write serve/config.yaml into the RayService manifest's ``spec.serveConfigV2``, and
serve/cluster_env.yaml into its Ray containers' ``env`` values.

The Serve config is the single source of truth; the RayService manifest carries a verbatim copy
(``serveConfigV2`` is a YAML *string*). Only that block of the manifest is rewritten, so its
comments and layout stay as written.

    python -m raylane.deploy.render            # rewrite kuberay/base/rayservice.yaml
    python -m raylane.deploy.render --check    # exit 1 if the manifest is out of date

Paths default to the repository layout, relative to the current directory (the repo root).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

from raylane.deploy.cluster_env import DEFAULT_CLUSTER_ENV, ClusterEnvError, write_into
from raylane.deploy.cluster_env import load as load_cluster_env

DEFAULT_SERVE_CONFIG = Path("serve/config.yaml")
DEFAULT_MANIFEST = Path("kuberay/base/rayservice.yaml")
FIELD = "serveConfigV2"

_HEADER = re.compile(rf"^(?P<indent>[ ]*){FIELD}:(?P<rest>.*)$")


class RenderError(RuntimeError):
    """The manifest or the Serve config cannot be rendered."""


def _block_header(text: str) -> str:
    """The literal block scalar header that makes YAML give back ``text`` exactly."""
    if not text.endswith("\n"):
        chomp = "-"
    elif text.endswith("\n\n"):
        chomp = "+"
    else:
        chomp = ""
    first = next((line for line in text.splitlines() if line.strip()), "")
    indent = "2" if first.startswith(" ") else ""
    return f"|{indent}{chomp}"


def render_block(serve_text: str, key_indent: str) -> list[str]:
    """The manifest lines for ``serveConfigV2: |`` followed by ``serve_text``, indented."""
    if "\t" in serve_text:
        raise RenderError("serve config contains tab characters; YAML block scalars forbid them")
    pad = key_indent + "  "
    lines = [f"{key_indent}{FIELD}: {_block_header(serve_text)}"]
    body = serve_text[:-1] if serve_text.endswith("\n") else serve_text
    lines += [pad + line if line.strip() else "" for line in body.split("\n")]
    return lines


def replace_serve_config(manifest_text: str, serve_text: str) -> str:
    """Return ``manifest_text`` with its ``serveConfigV2`` block replaced by ``serve_text``."""
    lines = manifest_text.splitlines()
    starts = [i for i, line in enumerate(lines) if _HEADER.match(line)]
    if len(starts) != 1:
        raise RenderError(
            f"expected exactly one `{FIELD}:` line in the manifest, found {len(starts)}"
        )
    start = starts[0]
    indent = _HEADER.match(lines[start]).group("indent")
    end = start + 1
    while end < len(lines):
        line = lines[end]
        if line.strip() and not line.startswith(indent + " "):
            break
        end += 1
    keep = "+" in _HEADER.match(lines[start]).group("rest")  # `|+`: trailing blanks are content
    while not keep and end > start + 1 and not lines[end - 1].strip():
        end -= 1  # trailing blank lines of a clipped block belong to the layout, not the block
    new_lines = lines[:start] + render_block(serve_text, indent) + lines[end:]
    return "\n".join(new_lines) + "\n"


def _serve_config_of(manifest_text: str) -> str | None:
    docs = [d for d in yaml.safe_load_all(manifest_text) if d]
    for doc in docs:
        if doc.get("kind") == "RayService":
            return doc.get("spec", {}).get(FIELD)
    raise RenderError("no RayService in the manifest")


def render(serve_config: Path, manifest: Path, cluster_env: Path = DEFAULT_CLUSTER_ENV) -> str:
    """The manifest text with the current Serve config (checked by parsing it back) and cluster
    env in it."""
    serve_text = serve_config.read_text()
    parsed = yaml.safe_load(serve_text)
    if not isinstance(parsed, dict) or not parsed.get("applications"):
        raise RenderError(f"{serve_config} is not a Ray Serve config (no `applications:`)")
    new_text = write_into(replace_serve_config(manifest.read_text(), serve_text),
                          load_cluster_env(cluster_env))
    if _serve_config_of(new_text) != serve_text:  # pragma: no cover - guards the block writer
        raise RenderError("rendered serveConfigV2 does not parse back to the Serve config text")
    return new_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylane.deploy.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-config", type=Path, default=DEFAULT_SERVE_CONFIG)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--cluster-env", type=Path, default=DEFAULT_CLUSTER_ENV)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the manifest differs from the Serve config "
                             "or the cluster env")
    args = parser.parse_args(argv)
    try:
        new_text = render(args.serve_config, args.manifest, args.cluster_env)
    except (OSError, RenderError, ClusterEnvError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if new_text == args.manifest.read_text():
        print(f"{args.manifest}: up to date with {args.serve_config} and {args.cluster_env}")
        return 0
    if args.check:
        print(f"{args.manifest}: differs from {args.serve_config} or {args.cluster_env}; "
              "run `python -m raylane.deploy.render`", file=sys.stderr)
        return 1
    args.manifest.write_text(new_text)
    print(f"{args.manifest}: wrote {FIELD} from {args.serve_config} and the Ray containers' env "
          f"from {args.cluster_env}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
