"""Where the console finds the services: environment variables, with `make demo`'s defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

ROOT = Path(__file__).resolve().parents[2]


class ConsoleSettings(BaseModel):
    """The services the console talks to. Read once per script run from the environment."""

    model_config = ConfigDict(frozen=True)

    serve_url: str
    tracking_uri: str
    ray_address: str
    registered_model: str
    serve_config: Path
    tune_configs: Path
    timeout_s: float = 10.0
    # Training jobs: `ray` submits through the jobs cluster's Jobs API with its Ray token
    # (`make console`); `kubernetes` creates RayJobs with the pod's ServiceAccount (RBAC), no token.
    job_backend: Literal["ray", "kubernetes"] = "ray"
    job_namespace: str | None = None  # kubernetes: None is the pod's own namespace
    job_cluster: str = "raylane"  # kubernetes: the RayCluster the RayJobs run on
    # The Metrics view's Prometheus (`make observe` starts one here)
    prometheus_url: str = "http://127.0.0.1:9090"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ConsoleSettings:
        env = os.environ if env is None else env
        return cls(
            serve_url=env.get("RAYLANE_SERVE_URL", "http://127.0.0.1:8000").rstrip("/"),
            tracking_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}"),
            ray_address=_dashboard_url(env.get("RAY_ADDRESS", "http://127.0.0.1:8265")),
            registered_model=env.get("RAYLANE_MODEL", "credit"),
            serve_config=Path(env.get("RAYLANE_SERVE_CONFIG", ROOT / "serve" / "config.yaml")),
            tune_configs=Path(env.get("RAYLANE_TUNE_CONFIGS", ROOT / "tune_configs")),
            timeout_s=float(env.get("RAYLANE_CONSOLE_TIMEOUT_S", "10")),
            job_backend=env.get("RAYLANE_JOB_BACKEND", "ray"),
            job_namespace=env.get("RAYLANE_JOB_NAMESPACE") or None,
            job_cluster=env.get("RAYLANE_JOB_CLUSTER", "raylane"),
            prometheus_url=env.get("RAYLANE_PROMETHEUS_URL", "http://127.0.0.1:9090").rstrip("/"),
        )


def _dashboard_url(address: str) -> str:
    """Ray's dashboard (Jobs and Serve REST APIs) URL; `ray://` and bare host:port accepted."""
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        host = address.removeprefix("ray://").split(":")[0]
        return f"http://{host}:8265"
    if "://" not in address:
        return f"http://{address}"
    return address
