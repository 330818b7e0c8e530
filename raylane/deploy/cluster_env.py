"""The serving cluster's RAY_* environment, kept in one file (serve/cluster_env.yaml) that
`make serve`, the benchmarks and the rendered RayService all read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

_IN_REPO = Path(__file__).resolve().parents[2] / "serve" / "cluster_env.yaml"
# The repository's file (wherever the command runs), else serve/ of the current directory.
DEFAULT_CLUSTER_ENV = _IN_REPO if _IN_REPO.exists() else Path("serve/cluster_env.yaml")

_NAME = re.compile(r"^(?P<indent>\s*)- name: (?P<name>\S+)\s*$")
_VALUE = re.compile(r"^(?P<indent>\s*)value: (?P<value>.*)$")


class ClusterEnvError(ValueError):
    """The cluster env file, or the manifest it is written into, is not as expected."""


def load(path: Path = DEFAULT_CLUSTER_ENV) -> dict[str, str]:
    """``path``'s variables, every name and value a string."""
    env = yaml.safe_load(path.read_text()) or {}
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ClusterEnvError(f"{path}: expected a mapping of variable names to quoted strings")
    return env


def write_into(manifest_text: str, env: dict[str, str]) -> str:
    """``manifest_text`` with each ``- name: <var>`` entry's ``value:`` set from ``env`` (every
    Ray container that lists the variable); comments, order and layout stay as written. A
    variable no container lists is an error: add it to the manifest where it belongs."""
    lines, seen = manifest_text.splitlines(), set()
    for i, line in enumerate(lines[:-1]):
        name = _NAME.match(line)
        if name is None or name["name"] not in env:
            continue
        value = _VALUE.match(lines[i + 1])
        if value is None or len(value["indent"]) != len(name["indent"]) + 2:
            raise ClusterEnvError(f"line {i + 2}: expected `value:` under `- name: "
                                  f"{name['name']}`")
        seen.add(name["name"])
        wanted = env[name["name"]]
        if yaml.safe_load(value["value"]) != wanted:  # keep a value that already reads the same
            lines[i + 1] = f"{value['indent']}value: {json.dumps(wanted)}"
    missing = sorted(set(env) - seen)
    if missing:
        raise ClusterEnvError(f"the manifest's Ray containers do not list {missing}")
    return "\n".join(lines) + "\n"
