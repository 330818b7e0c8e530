"""Every container image the repository names (the Dockerfile's FROM, the manifests under
kuberay/, the workflows' containers), and which are pinned by digest.

A tag can be moved to other content; a digest cannot. An image is pinned here only with a digest
found published for that exact tag (no registry is reachable where this was written to resolve
one); the others are listed with the reason they are still by tag, and docs/security.md says how
an operator pins them (``docker buildx imagetools inspect <image>``). A new image reference, or
a pin dropped or changed, fails this test until the table below says so.
"""

from __future__ import annotations

import re

import yaml
from support.paths import ROOT

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
OWN_IMAGE = "raylane"  # built from this repository's Dockerfile; overlays set name and tag

# image (as written, without digest) -> its pinned digest, or why it is still by tag
PINNED = {
    "minio/minio:RELEASE.2025-04-22T22-12-26Z":
        "sha256:a1ea29fa28355559ef137d71fc570e508a214ec84ff8083e39bc5428980b015e",
}
BY_TAG = {
    "rayproject/ray:2.60.0-py311-cpu": "no published digest of this tag found",
    "postgres:17-bookworm": "a rolling tag: the published digests of it differ (it moves with "
                            "each minor release and base rebuild)",
    "redis:7.4-bookworm": "a rolling tag: the published digests of it differ",
    "python:3.11-bookworm": "a rolling tag: the published digests of it differ",
}


def references() -> dict[str, set[str]]:
    """{image reference as written: files naming it}, for every image in the repository."""
    found: dict[str, set[str]] = {}

    def add(ref: str, where: str) -> None:
        found.setdefault(ref, set()).add(where)

    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.strip().upper().startswith("FROM "):
            add(line.split()[1], "Dockerfile")
    manifests = [p for p in (ROOT / "kuberay").rglob("*.yaml") if "crds" not in p.parts]
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    for path in [*manifests, *workflows]:
        where = str(path.relative_to(ROOT))
        for doc in yaml.safe_load_all(path.read_text()):
            for ref in _images(doc):
                add(ref, where)
    return found


def _images(node) -> list[str]:
    """Values of ``image`` keys (pod specs, workflow containers and services), ``docker://``
    steps, at any depth."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "image" and isinstance(value, str):
                out.append(value)
            elif key == "uses" and isinstance(value, str) and value.startswith("docker://"):
                out.append(value.removeprefix("docker://"))
            else:
                out += _images(value)
    elif isinstance(node, list):
        for item in node:
            out += _images(item)
    return out


def test_every_image_reference_is_listed_pinned_or_by_tag():
    found = references()
    third_party = {ref: where for ref, where in found.items() if ref != OWN_IMAGE}
    assert third_party, "expected image references"
    names = {DIGEST.sub("", ref) for ref in third_party}
    listed = set(PINNED) | set(BY_TAG)
    assert names == listed, (f"not in the table: {sorted(names - listed)}; "
                             f"no longer referenced: {sorted(listed - names)}")
    for ref, where in sorted(third_party.items()):
        name = DIGEST.sub("", ref)
        if name in PINNED:
            assert ref == f"{name}@{PINNED[name]}", (ref, sorted(where))
        else:
            assert not DIGEST.search(ref), f"{ref}: pinned; move it to PINNED ({sorted(where)})"


def test_the_scan_finds_what_the_files_hold():
    """Known references in each kind of file: the scan would see a new one."""
    found = references()
    assert "Dockerfile" in found["rayproject/ray:2.60.0-py311-cpu"]
    assert ".github/workflows/ci.yml" in found["python:3.11-bookworm"]
    assert "kuberay/base/postgres-statefulset.yaml" in found["postgres:17-bookworm"]
    assert OWN_IMAGE in found  # every Ray pod and the console, renamed by the overlays
    ((name, digest),) = PINNED.items()
    assert found[f"{name}@{digest}"] == {"kuberay/overlays/dev/prediction-log-minio.yaml"}


def test_the_security_page_lists_the_same_pins():
    text = (ROOT / "docs" / "security.md").read_text()
    for name, digest in PINNED.items():
        assert f"{name}@{digest}" in text, name
    for name in BY_TAG:
        assert f"`{name}`" in text, name
