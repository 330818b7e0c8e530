"""The image workflow's version check (raylane.deploy.ci.versions): the repository agrees with
itself today, and each kind of drift is named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from raylane.deploy.ci import versions

ROOT = Path(__file__).resolve().parents[4]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    for name in ("pyproject.toml", "Dockerfile"):
        shutil.copy(ROOT / name, tmp_path / name)
    for sub in ("kuberay/base", "kuberay/jobs", "kuberay/overlays"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    return tmp_path


def test_the_repository_agrees_with_itself():
    pin, version = versions.ray_pin(), versions.package_version()
    assert versions.mismatches(image_ray=pin, git_tag=f"v{version}") == []
    assert len(versions.manifest_ray_versions()) >= 3
    assert set(versions.prod_image_tags().values()) == {version}


def test_the_built_images_ray_and_the_release_tag_are_checked():
    found = versions.mismatches(image_ray="2.0.0", git_tag="v9.9.9")
    assert any("the built image's Ray 2.0.0 != pyproject pin" in f for f in found), found
    assert any("git tag v9.9.9 != v" in f for f in found), found


@pytest.mark.parametrize("path,old,new,named", [
    ("kuberay/base/rayservice.yaml", 'rayVersion: "2.60.0"', 'rayVersion: "2.59.0"',
     "kuberay/base/rayservice.yaml:"),
    ("Dockerfile", "rayproject/ray:2.60.0", "rayproject/ray:2.59.0", "Dockerfile base image"),
    ("kuberay/overlays/prod/kustomization.yaml", 'newTag: "0.1.0"', 'newTag: "0.0.9"',
     "kuberay/overlays/prod/kustomization.yaml: image tag 0.0.9"),
])
def test_drift_is_named(repo, path, old, new, named):
    text = (repo / path).read_text()
    assert old in text
    (repo / path).write_text(text.replace(old, new))
    found = versions.mismatches(repo=repo)
    assert len(found) == 1 and named in found[0], found
