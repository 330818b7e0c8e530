"""Shared look of the console's pages: one way to say a service is down, units, the sidebar."""

from __future__ import annotations

import streamlit as st

from raylane.console.settings import ConsoleSettings

# What to do when a service does not answer, said the same way on every page.
REMEDIES = {
    "serving": "Start it with `make serve` (or `serve run serve/config.yaml`), or set "
               "RAYLANE_SERVE_URL to where it runs.",
    "mlflow": "Run `make demo` once to create the local store, or set MLFLOW_TRACKING_URI to "
              "your MLflow server.",
    "ray": "Start a Ray cluster (`make serve` starts one) or set RAY_ADDRESS to its dashboard "
           "(http://host:8265).",
    "prometheus": "Start it with `make observe` (it scrapes the cluster `make serve` started), or "
                  "set RAYLANE_PROMETHEUS_URL to the Prometheus that scrapes your Ray cluster.",
}
NAMES = {"serving": "The model service", "mlflow": "MLflow", "ray": "Ray's dashboard",
         "prometheus": "Prometheus"}


def settings() -> ConsoleSettings:
    """The settings for this script run (from the environment)."""
    return ConsoleSettings.from_env()


def service_down(service: str, address: str, reason: str) -> None:
    """Say which service is unreachable and what to do; never a traceback."""
    st.error(f"**{NAMES[service]} is not reachable** at `{address}`: {reason}\n\n"
             f"{REMEDIES[service]}", icon=":material/cloud_off:")


def milliseconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"
