"""The manifests workflow's rendering and diff (raylane.deploy.ci.manifests) with the real
`kubectl kustomize`: every overlay renders to a file, and a change to the prod overlay shows
in the Markdown diff (no change says so)."""

from __future__ import annotations

import shutil
from pathlib import Path

from raylane.deploy.ci import manifests

ROOT = Path(__file__).resolve().parents[4]


def test_every_overlay_renders_and_a_prod_change_shows_in_the_diff(tmp_path):
    base = manifests.render(ROOT, tmp_path / "base")
    assert {p.name for p in base} >= {"dev.yaml", "prod.yaml", "dev__jobs.yaml",
                                      "prod__jobs.yaml"}
    assert "kind: RayService" in (tmp_path / "base" / "prod.yaml").read_text()
    assert manifests.diff_markdown(tmp_path / "base", tmp_path / "base").endswith(
        "No change.\n")

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "kuberay", repo / "kuberay", ignore=shutil.ignore_patterns("crds"))
    prod = repo / "kuberay" / "overlays" / "prod" / "kustomization.yaml"
    text = prod.read_text()
    assert 'newTag: "0.1.0"' in text
    prod.write_text(text.replace('newTag: "0.1.0"', 'newTag: "0.1.1"'))
    manifests.render(repo, tmp_path / "head")
    diff = manifests.diff_markdown(tmp_path / "base", tmp_path / "head")
    assert diff.startswith("### Rendered `prod` overlay\n\n```diff\n")
    changed = {line.replace(" ", "") for line in diff.splitlines()
               if line[:1] in "+-" and "registry.example.com/raylane:" in line}
    assert changed == {"-image:registry.example.com/raylane:0.1.0",
                       "+image:registry.example.com/raylane:0.1.1"}, diff
