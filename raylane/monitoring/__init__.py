"""Monitoring of a served model: drift and live performance against the version's reference
profile, a decision (``retrain`` or ``none``) and its record in MLflow.

``run_monitor`` is the entry point (``ray_jobs.monitor`` is its command line)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raylane.monitoring.monitor import run_monitor
    from raylane.monitoring.report import MonitorReport

__all__ = ["MonitorReport", "run_monitor"]


def __getattr__(name: str):
    # Lazy: raylane.release.publish imports raylane.monitoring.reference, which must not pull
    # in Ray.
    if name == "run_monitor":
        from raylane.monitoring.monitor import run_monitor

        return run_monitor
    if name == "MonitorReport":
        from raylane.monitoring.report import MonitorReport

        return MonitorReport
    raise AttributeError(name)
