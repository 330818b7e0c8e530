"""What continuous training adds to the reference data: newly labelled rows (``--new-data``)
and logged predictions whose labels arrived later (``--labels`` joined on ``prediction_id``)."""

from __future__ import annotations

import logging

import pandas as pd

from raylane.config import PipelineConfig
from raylane.data.read import DataError
from raylane.data.tables import read_tables
from raylane.monitoring.performance import ID, LABEL, read_labels
from raylane.monitoring.reading import OUTPUT_COLUMNS, read_window

log = logging.getLogger(__name__)


def labelled_from_log(predictions: str, labels: str, config: PipelineConfig) -> pd.DataFrame:
    """Logged inputs (any version of the config's registered model, read with Ray Data) joined
    on ``prediction_id`` with the labels that arrived for them."""
    target = config.data.target
    name = config.mlflow.registered_model
    table = read_labels(labels, target=target)
    logged = read_window(predictions, name, None, None)
    if logged.num_rows == 0:
        raise DataError(f"--predictions: no logged predictions of {name!r} at {predictions!r}")
    if ID not in logged.column_names:
        raise DataError("--predictions: the log has no prediction_id column (logged by an "
                        "older server?); labels cannot be joined")
    inputs = [c for c in logged.column_names if c not in OUTPUT_COLUMNS]
    frame = logged.select([*inputs, ID]).to_pandas().drop_duplicates(ID)
    joined = table.rename(columns={LABEL: target}).merge(frame, on=ID, how="inner")
    log.info("labels: %d rows, %d joined to logged predictions", len(table), len(joined))
    return joined


def new_labelled_rows(config: PipelineConfig, new_data: str | None, predictions: str | None,
                      labels: str | None) -> pd.DataFrame:
    """``--new-data`` rows plus, with ``--labels``, the labelled logged predictions."""
    frames = []
    if new_data:
        frames.append(read_tables(new_data, "--new-data"))
    if labels:
        if not predictions:
            raise DataError("--labels needs --predictions (the log they are joined with)")
        frames.append(labelled_from_log(predictions, labels, config))
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    if config.data.target not in rows.columns:
        raise DataError(f"--new-data: the new rows have no target column "
                        f"{config.data.target!r}")
    return rows
