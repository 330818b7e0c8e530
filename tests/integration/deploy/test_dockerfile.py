"""The Dockerfile cannot be built here (no Docker engine); check its text instead."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from packaging.specifiers import SpecifierSet
from support import k8s

REPO = k8s.REPO
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def ray_pin() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"ray(\[|==)", d)).split("==", 1)[1]


def test_base_image_matches_ray_pin_and_python():
    froms = [rest for op, rest in instructions() if op == "FROM"]
    assert len(froms) == 1, "single-stage build on the official Ray image"
    image, _, tag = froms[0].partition(":")
    assert image == "rayproject/ray"
    assert tag == f"{ray_pin()}-py311-cpu"
    # the image's Python (3.11, the one the suite is tested with) is one the project allows
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires).contains("3.11")


def test_runs_as_non_root():
    users = [rest for op, rest in instructions() if op == "USER"]
    assert users, "USER must be set explicitly"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user in {"ray", "1000"}  # the rayproject/ray image's user, uid 1000
    # nothing runs as root after the last USER
    ops = instructions()
    last_user = max(i for i, (op, _) in enumerate(ops) if op == "USER")
    assert all(op != "USER" for op, _ in ops[last_user + 1:])
    assert "sudo" not in DOCKERFILE


def test_installs_the_package_and_only_the_db_driver_and_s3_client():
    runs = " ".join(rest for op, rest in instructions() if op == "RUN")
    installs = re.findall(r"pip install ([^&]+)", runs)
    assert len(installs) == 2
    args = installs[0].split()
    assert args[:2] == ["--no-cache-dir", '"uv==0.13.9"'], args  # uv, pinned, to export the lock
    args = [a for a in installs[1].split() if not a.startswith("-")]
    assert args[:2] == ["/tmp/locked.txt", '".[console]"'], args
    pins = dict(a.strip('"').split("==") for a in args[2:])
    assert set(pins) == {"psycopg2-binary", "boto3"}, args
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {p["name"]: p["version"] for p in lock["package"]}
    assert pins == {name: locked[name] for name in pins}  # the versions the tests ran


def test_installs_the_versions_in_the_lock():
    """The image's dependencies are uv.lock's (as pip constraints), not the newest at build."""
    runs = " ".join(rest for op, rest in instructions() if op == "RUN")
    assert "uv export --frozen --no-emit-project --no-hashes --extra console -o /tmp/locked.txt" \
        in runs
    assert 'pip install --no-cache-dir -c /tmp/locked.txt ".[console]"' in runs
    copied = [rest for op, rest in instructions() if op == "COPY"]
    assert any("uv.lock" in rest.split() for rest in copied)


def _dockerignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat + "/*") or any(
                fnmatch.fnmatch(part, pat) for part in [path.split("/")[0]]):
            ignored = not neg
    return ignored


def test_copied_paths_exist_and_are_not_dockerignored():
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    copies = [rest for op, rest in instructions() if op == "COPY"]
    assert copies
    for rest in copies:
        parts = [p for p in rest.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"COPY source {src} missing"
            assert not _dockerignored(src, patterns), f"COPY source {src} is in .dockerignore"


def test_dockerignore_keeps_state_out():
    patterns = set((REPO / ".dockerignore").read_text().split())
    for must in (".git", "mlruns", "mlartifacts", "ray_results", "data/*", "*.db",
                 "**/__pycache__"):
        assert must in patterns, must
    for env in (".venv", ".venv-airflow", ".venv-kserve", ".venv-evidently"):
        assert _dockerignored(env, list(patterns)), env
    assert _dockerignored("data/other.parquet", list(patterns - {"!data/credit_data.csv"}))


def test_entry_points_exist_in_the_image():
    """What the manifests run inside the image: the job module, the Serve app package, mlflow."""
    copied = {p.split()[-1].removeprefix("./") for op, p in instructions() if op == "COPY"}
    assert {"raylane", "ray_jobs", "tune_configs", "serve", "console"} <= copied
    assert (REPO / "ray_jobs" / "train_pipeline.py").is_file()
    assert (REPO / "raylane" / "serving" / "__init__.py").is_file()
    assert "import ray, raylane, ray_jobs, psycopg2, boto3" in DOCKERFILE
    mlflow = k8s.render_overlay(k8s.KUBERAY / "overlays" / "dev")
    cmds = {tuple(c.get("command", [])) for o in mlflow for _, c in k8s.containers(o)}
    assert ("mlflow", "server") in cmds
    assert re.search(r"^WORKDIR /home/ray/app$", DOCKERFILE, re.M)
