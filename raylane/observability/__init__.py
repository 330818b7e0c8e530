"""Metrics, alert rules and dashboards for operating Raylane (local Prometheus, Kubernetes)."""
