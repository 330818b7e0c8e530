"""The monitoring report: what drifted, how the model performs, and the decision it leads to."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import fsspec

from raylane.config import TriggersConfig
from raylane.monitoring.drift import ColumnDrift, DatasetDrift, finite

RETRAIN, NONE = "retrain", "none"


def decide(rows: int, drift: DatasetDrift | None, prediction: ColumnDrift | None,
           performance: dict | None, triggers: TriggersConfig) -> tuple[str, list[str]]:
    """``retrain`` when an enabled trigger fired (dataset drift, prediction drift, a performance
    drop beyond the tolerance), with one reason per trigger; ``none`` with why not."""
    if rows < triggers.min_rows:
        return NONE, [f"{rows} logged rows in the window, fewer than triggers.min_rows "
                      f"({triggers.min_rows}): too few to judge drift"]
    reasons = []
    if drift is not None and drift.dataset_drift and triggers.dataset_drift:
        drifted = drift.drifted_columns
        reasons.append(f"dataset drift: {len(drifted)} of {len(drift.columns)} columns drifted "
                       f"(share {drift.drift_share:.2f}): {', '.join(drifted)}")
    if prediction is not None and prediction.drift and triggers.prediction_drift:
        reasons.append(f"prediction drift: {prediction.method} {prediction.score:.4g} "
                       f"(threshold {prediction.threshold})")
    if performance and performance.get("degraded"):
        m = performance["metric"]
        reasons.append(f"performance: live {m} {performance['live'][m]:.4g} is "
                       f"{performance['drop']:.4g} worse than the holdout's "
                       f"{performance['holdout'][m]:.4g} (tolerance {performance['tolerance']})")
    if reasons:
        return RETRAIN, reasons
    share = f"{drift.drift_share:.2f}" if drift is not None else "n/a"
    why = [f"no trigger fired: {len(drift.drifted_columns) if drift else 0} columns drifted "
           f"(share {share})"]
    if performance and "drop" in performance:
        why.append(f"live {performance['metric']} within {performance['tolerance']} of holdout")
    return NONE, why


@dataclass
class MonitorReport:
    """The outcome of one monitoring run (``to_dict()`` is the JSON report)."""

    decision: str
    reasons: list[str]
    run_id: str | None
    body: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return finite({**self.body, "decision": self.decision, "reasons": self.reasons,
                       "run_id": self.run_id})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False)

    def write(self, path: str) -> None:
        """Write the JSON report to a local path or fsspec URI."""
        with fsspec.open(path, "w") as f:
            f.write(self.to_json())


def build_body(*, model: dict, window: dict, rows: int, drift: DatasetDrift | None,
               drift_share_threshold: float, prediction: dict | None,
               performance: dict | None) -> dict[str, Any]:
    """The report's fields apart from the decision."""
    columns = {c.name: {k: v for k, v in c.to_dict().items() if k != "name"}
               for c in (drift.columns if drift else [])}
    return {
        "model": model, "window": window, "rows": rows,
        "dataset_drift": bool(drift and drift.dataset_drift),
        "drift_share": drift.drift_share if drift else 0.0,
        "drift_share_threshold": drift_share_threshold,
        "drifted_columns": drift.drifted_columns if drift else [],
        "columns": columns,
        "missing_rate_changes": [n for n, c in columns.items() if c["missing"].get("flagged")],
        "unseen_categories": {n: c["unseen_categories"] for n, c in columns.items()
                              if c.get("unseen_categories") and c["unseen_categories"]["rows"]},
        "prediction": prediction,
        "performance": performance,
    }
