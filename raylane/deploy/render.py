"""Write serve/config.yaml into the RayService manifest's ``spec.serveConfigV2``, the serving
worker group's bounds computed from it, and serve/cluster_env.yaml into its Ray containers'
``env`` values.

The Serve config is the single source of truth; the RayService manifest carries a verbatim copy
(``serveConfigV2`` is a YAML *string*). Only that block of the manifest is rewritten, so its
comments and layout stay as written.

The serve worker group's ``minReplicas``/``replicas``/``maxReplicas`` are computed from the Serve
autoscaling bounds and the worker pod's size (:func:`worker_bounds`): as many pods as the
replicas at ``min_replicas`` and at ``max_replicas`` fill, no pod that could never hold a replica.
They are written into the RayService (4-CPU pods) and into the dev overlay's patch (1-CPU pods),
with the pair as the worker template's annotation ``raylane.io/worker-bounds``: KubeRay v1.7 leaves
the bounds out of the cluster hash, so without the annotation a change would never reach a running
RayService; with it, the change rolls out as a new cluster.

It also writes the observability manifests generated from their sources
(the alert rules file from :mod:`raylane.observability.alerts`;
:mod:`raylane.observability.manifests`: the PrometheusRule from the alert rules file, Ray's
Grafana dashboards from Ray's own dashboard factory).

    python -m raylane.deploy.render            # rewrite kuberay/base/rayservice.yaml (+ the rest)
    python -m raylane.deploy.render --check    # exit 1 if a generated file is out of date

Paths default to the repository layout, relative to the current directory (the repo root).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import yaml

from raylane.deploy.cluster_env import DEFAULT_CLUSTER_ENV, ClusterEnvError, write_into
from raylane.deploy.cluster_env import load as load_cluster_env

DEFAULT_SERVE_CONFIG = Path("serve/config.yaml")
DEFAULT_MANIFEST = Path("kuberay/base/rayservice.yaml")
DEFAULT_DEV_PATCH = Path("kuberay/overlays/dev/small-rayservice-pods.yaml")
FIELD = "serveConfigV2"
SERVE_GROUP = "serve-workers"
BOUNDS_ANNOTATION = "raylane.io/worker-bounds"
# Ray's logical `memory` on a node: what the object store (30% by default) leaves.
RAY_MEMORY_SHARE = Fraction(7, 10)

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
    if not _deployments(parsed):  # nothing to size the worker group by
        return new_text
    return render_bounds(parsed, new_text, None)[0]


def render_dev_patch(serve_config: Path, manifest: Path, patch: Path) -> str:
    """The dev overlay's RayService patch with the bounds for its (smaller) worker pods."""
    serve = yaml.safe_load(serve_config.read_text())
    return render_bounds(serve, manifest.read_text(), patch.read_text())[1]


# --------------------------------------------------------------------------- worker bounds

_QUANTITY = {"m": Fraction(1, 1000), "": Fraction(1), "k": Fraction(1000), "M": Fraction(10**6),
             "G": Fraction(10**9), "Ki": Fraction(1024), "Mi": Fraction(1024**2),
             "Gi": Fraction(1024**3), "Ti": Fraction(1024**4)}


def quantity(value: str | int | float) -> Fraction:
    """A Kubernetes resource quantity ("500m", "4", "8Gi") as an exact number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    if not m or m.group(2) not in _QUANTITY:
        raise RenderError(f"not a Kubernetes quantity: {value!r}")
    return Fraction(m.group(1)) * _QUANTITY[m.group(2)]


@dataclass(frozen=True)
class Pod:
    """What one serve worker pod offers Ray: logical CPUs and memory (bytes)."""

    cpus: Fraction
    memory: Fraction


@dataclass(frozen=True)
class Bounds:
    """Serve worker pods: at least ``lo`` (what min_replicas fills), at most ``hi``."""

    lo: int
    hi: int

    @property
    def annotation(self) -> str:
        return f"{self.lo}-{self.hi}"


def _deployments(serve: dict) -> list[dict]:
    return [d for app in serve.get("applications") or [] for d in app.get("deployments") or []]


def replicas_per_pod(dep: dict, pod: Pod) -> int:
    """How many replicas of ``dep`` one pod holds (by CPUs and by Ray memory)."""
    opts = dep.get("ray_actor_options") or {}
    cpus = Fraction(str(opts.get("num_cpus", 1)))
    memory = Fraction(str(opts.get("memory", 0)))
    fits = [math.floor(pod.cpus / cpus)] if cpus else []
    if memory:
        fits.append(math.floor(pod.memory * RAY_MEMORY_SHARE / memory))
    if not fits:
        raise RenderError(f"{dep.get('name')}: a replica asks no CPU and no memory")
    if min(fits) < 1:
        raise RenderError(f"{dep.get('name')}: one replica ({cpus} CPU, {memory} bytes) does not "
                          f"fit a serve worker pod ({pod.cpus} CPU, {pod.memory} bytes)")
    return min(fits)


def worker_bounds(serve: dict, pod: Pod) -> Bounds:
    """The serve worker group's bounds for the Serve config's replica bounds on pods of ``pod``:
    each deployment's replicas at min_replicas and at max_replicas packed onto whole pods."""
    deps = _deployments(serve)
    if not deps:
        raise RenderError("the Serve config has no deployments")
    lo = hi = 0
    for dep in deps:
        auto = dep.get("autoscaling_config")
        if auto:
            n_lo, n_hi = int(auto.get("min_replicas", 1)), int(auto["max_replicas"])
        else:
            n_lo = n_hi = int(dep.get("num_replicas", 1))
        per_pod = replicas_per_pod(dep, pod)
        lo += math.ceil(n_lo / per_pod)
        hi += math.ceil(n_hi / per_pod)
    return Bounds(lo, hi)


def _serve_group(rayservice: dict) -> dict:
    groups = rayservice["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return next(g for g in groups if g["groupName"] == SERVE_GROUP)


def pod_of_group(group: dict) -> Pod:
    c = group["template"]["spec"]["containers"][0]
    return Pod(quantity(group["rayStartParams"]["num-cpus"]),
               quantity(c["resources"]["limits"]["memory"]))


def _set_scalar(lines: list[str], index: int, value: str) -> None:
    key, _, _ = lines[index].partition(":")
    lines[index] = f"{key}: {value}"


def set_rayservice_bounds(manifest_text: str, bounds: Bounds) -> str:
    """``manifest_text`` with the serve group's replicas/minReplicas/maxReplicas and bounds
    annotation set (line edits inside that group's block; comments stay)."""
    lines = manifest_text.splitlines()
    starts = [i for i, line in enumerate(lines)
              if re.match(rf"^\s*- groupName: {SERVE_GROUP}\s*$", line)]
    if len(starts) != 1:
        raise RenderError(f"expected one worker group `{SERVE_GROUP}` in the manifest")
    start = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (not lines[end].strip()
                                or len(lines[end]) - len(lines[end].lstrip()) > indent):
        end += 1
    want = {"replicas": str(bounds.lo), "minReplicas": str(bounds.lo),
            "maxReplicas": str(bounds.hi), BOUNDS_ANNOTATION: f'"{bounds.annotation}"'}
    found = set()
    for i in range(start, end):
        m = re.match(r"^\s*(?:- )?([\w./-]+):", lines[i])
        if m and m.group(1) in want and m.group(1) not in found:
            _set_scalar(lines, i, want[m.group(1)])
            found.add(m.group(1))
    if found != set(want):
        raise RenderError(f"worker group `{SERVE_GROUP}` lacks {sorted(set(want) - found)}")
    return "\n".join(lines) + "\n"


_PATCH_BASE = "/spec/rayClusterConfig/workerGroupSpecs/0"
_PATCH_PATHS = {f"{_PATCH_BASE}/replicas": "lo", f"{_PATCH_BASE}/minReplicas": "lo",
                f"{_PATCH_BASE}/maxReplicas": "hi",
                f"{_PATCH_BASE}/template/metadata/annotations/"
                + BOUNDS_ANNOTATION.replace("/", "~1"): "annotation"}


def pod_of_patch(patch: list[dict], base: Pod) -> Pod:
    """The serve worker pod as a JSON 6902 patch of the RayService resizes it."""
    ops = {op["path"]: op.get("value") for op in patch}
    cpus = ops.get(f"{_PATCH_BASE}/rayStartParams/num-cpus")
    res = ops.get(f"{_PATCH_BASE}/template/spec/containers/0/resources") or {}
    memory = (res.get("limits") or {}).get("memory")
    return Pod(quantity(cpus) if cpus else base.cpus,
               quantity(memory) if memory else base.memory)


def set_patch_bounds(patch_text: str, bounds: Bounds) -> str:
    """``patch_text`` (a JSON 6902 patch of the RayService) with the bounds' values set."""
    lines = patch_text.splitlines()
    values = {"lo": str(bounds.lo), "hi": str(bounds.hi), "annotation": f'"{bounds.annotation}"'}
    found = set()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*(?:- )?path:\s*(\S+)\s*$", line)
        if not (m and m.group(1) in _PATCH_PATHS):
            continue
        j = next(k for k in range(i + 1, len(lines)) if re.match(r"^\s*value:", lines[k]))
        _set_scalar(lines, j, values[_PATCH_PATHS[m.group(1)]])
        found.add(m.group(1))
    if found != set(_PATCH_PATHS):
        raise RenderError(f"the patch lacks operations on {sorted(set(_PATCH_PATHS) - found)}")
    return "\n".join(lines) + "\n"


def render_bounds(serve: dict, manifest_text: str, patch_text: str | None
                  ) -> tuple[str, str | None]:
    """The RayService (and the dev patch) with the serve worker bounds computed for each."""
    base_pod = pod_of_group(_serve_group(yaml.safe_load(manifest_text)))
    manifest_text = set_rayservice_bounds(manifest_text, worker_bounds(serve, base_pod))
    if patch_text is not None:
        pod = pod_of_patch(yaml.safe_load(patch_text), base_pod)
        patch_text = set_patch_bounds(patch_text, worker_bounds(serve, pod))
    return manifest_text, patch_text


def outputs(serve_config: Path, manifest: Path, dev_patch: Path | None,
            cluster_env: Path = DEFAULT_CLUSTER_ENV) -> dict[Path, str]:
    """Every file this module writes, with the text it should hold."""
    out = {manifest: render(serve_config, manifest, cluster_env)}
    if dev_patch is not None:  # the repository's own layout: the observability manifests too
        out[dev_patch] = render_dev_patch(serve_config, manifest, dev_patch)
        from raylane.observability import alerts, manifests

        out[manifests.ALERTS] = alerts.render()
        out[manifests.PROMETHEUS_RULE] = manifests.render_prometheus_rule(
            text=out[manifests.ALERTS])
        for name, text in manifests.grafana_dashboards().items():
            out[manifests.DASHBOARDS / name] = text
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m raylane.deploy.render", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-config", type=Path, default=DEFAULT_SERVE_CONFIG)
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--cluster-env", type=Path, default=DEFAULT_CLUSTER_ENV)
    parser.add_argument("--dev-patch", type=Path, default=None,
                        help=f"the dev overlay's RayService patch (default: {DEFAULT_DEV_PATCH} "
                             "when --manifest is the default)")
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a file differs from what it is rendered from")
    args = parser.parse_args(argv)
    dev_patch = args.dev_patch
    if dev_patch is None and args.manifest == DEFAULT_MANIFEST:
        dev_patch = DEFAULT_DEV_PATCH
    try:
        files = outputs(args.serve_config, args.manifest, dev_patch, args.cluster_env)
    except (OSError, RenderError, ClusterEnvError, yaml.YAMLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stale = [path for path, text in files.items()
             if not path.exists() or path.read_text() != text]
    if not stale:
        print(f"{', '.join(map(str, files))}: up to date with {args.serve_config}")
        return 0
    if args.check:
        for path in stale:
            print(f"{path}: differs from what {args.serve_config} renders; "
                  "run `python -m raylane.deploy.render`", file=sys.stderr)
        return 1
    for path in stale:
        path.write_text(files[path])
        print(f"{path}: rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
