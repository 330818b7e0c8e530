"""Where the console finds the services: environment variables, with `make demo`'s defaults."""

from __future__ import annotations

import os
from pathlib import Path

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
