"""The versions the image, the package and the manifests must agree on (image.yml, before a push).

    python -m raylane.deploy.ci.versions [--image-ray-version X] [--git-tag vX.Y.Z]

Checks, from the repository: the Ray pin in pyproject.toml == the Dockerfile's base image tag
== every ``rayVersion`` in kuberay/ (base and jobs); the prod overlays' image tag == the
package version. With ``--image-ray-version`` (what the built image's ``ray.__version__``
says) that too; with ``--git-tag`` (a release tag) it must be ``v<package version>``. Prints
``version=...`` and ``ray=...`` (also to ``$GITHUB_OUTPUT`` when set); exit 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[3]


def package_version(repo: Path = REPO) -> str:
    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]


def ray_pin(repo: Path = REPO) -> str:
    deps = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        found = re.fullmatch(r"ray(\[[^\]]*\])?==([0-9][^;\s]*)", dep.strip())
        if found:
            return found.group(2)
    raise ValueError("pyproject.toml: no exact `ray==` pin in [project].dependencies")


def dockerfile_ray(repo: Path = REPO) -> str:
    found = re.search(r"^FROM\s+rayproject/ray:([0-9][0-9.]*)",
                      (repo / "Dockerfile").read_text(), re.M)
    if not found:
        raise ValueError("Dockerfile: no `FROM rayproject/ray:<version>...` line")
    return found.group(1).rstrip(".")


def manifest_ray_versions(repo: Path = REPO) -> dict[str, str]:
    """``rayVersion`` of every KubeRay object under kuberay/base and kuberay/jobs, by file:line."""
    out = {}
    for path in sorted([*(repo / "kuberay" / "base").glob("*.yaml"),
                        *(repo / "kuberay" / "jobs").glob("*.yaml")]):
        text = path.read_text()
        for found in re.finditer(r"^\s*rayVersion:\s*\"?([^\"\s]+)\"?", text, re.M):
            line = text.count("\n", 0, found.start()) + 1
            out[f"{path.relative_to(repo)}:{line}"] = found.group(1)
    return out


def prod_image_tags(repo: Path = REPO) -> dict[str, str]:
    """The raylane image's tag in each prod overlay (platform and jobs)."""
    out = {}
    for path in sorted((repo / "kuberay" / "overlays" / "prod").rglob("kustomization.yaml")):
        for image in yaml.safe_load(path.read_text()).get("images", []):
            if image.get("name") == "raylane":
                out[str(path.relative_to(repo))] = str(image.get("newTag"))
    return out


def mismatches(image_ray: str | None = None, git_tag: str | None = None,
               repo: Path = REPO) -> list[str]:
    pin, version = ray_pin(repo), package_version(repo)
    found = [f"Dockerfile base image: Ray {dockerfile_ray(repo)} != pyproject pin {pin}"
             ] if dockerfile_ray(repo) != pin else []
    found += [f"{where}: rayVersion {v} != pyproject pin {pin}"
              for where, v in manifest_ray_versions(repo).items() if v != pin]
    found += [f"{where}: image tag {t} != package version {version}"
              for where, t in prod_image_tags(repo).items() if t != version]
    if image_ray is not None and image_ray != pin:
        found.append(f"the built image's Ray {image_ray} != pyproject pin {pin}")
    if git_tag is not None and git_tag != f"v{version}":
        found.append(f"git tag {git_tag} != v{version} (pyproject.toml's version)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-ray-version", help="ray.__version__ inside the built image")
    parser.add_argument("--git-tag", help="the release tag being built, e.g. v0.1.0")
    args = parser.parse_args(argv)
    problems = mismatches(args.image_ray_version, args.git_tag)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 1
    lines = f"version={package_version()}\nray={ray_pin()}\n"
    print(lines, end="")
    if os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a") as out:
            out.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
