"""Score a file through the model service: batches, and the rows the service rejects.

A batch the service rejects (4xx) is split in halves until the rows at fault stand alone, so one
bad row costs a few extra requests, never its batch's good rows. The service only ever names
the first problem in a batch, hence the bisection rather than trusting the row it names.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from raylane.console.serving import Answer, Metadata, Rejection, predict

DEFAULT_BATCH_ROWS = 256
MAX_UPLOAD_ROWS = 200_000
# Largest upload (MB): the file uploader's max_upload_size and server.maxUploadSize in
# .streamlit/config.toml. A console pod has 1 GiB; pandas needs several times a CSV's size.
MAX_UPLOAD_MB = 25
PREDICTION, PREDICTION_ID, MODEL_VERSION = "prediction", "prediction_id", "model_version"

Predict = Callable[[list[dict]], Answer | Rejection]
Progress = Callable[[int, int], None]  # rows done, rows in all


class UnreadableFile(ValueError):
    """The upload is not a CSV or Parquet table the console can read."""


def read_table(name: str, data: bytes, max_rows: int = MAX_UPLOAD_ROWS,
               max_mb: float = MAX_UPLOAD_MB) -> pd.DataFrame:
    """An uploaded CSV or Parquet file (by its name's suffix) as a frame of at most ``max_rows``.
    A file over the limits is refused before it is parsed: its size first, then Parquet's row
    count from its footer, and a CSV is read no further than ``max_rows + 1`` rows."""
    if len(data) > max_mb * 1024 * 1024:
        raise UnreadableFile(f"{name}: {len(data) / 1024 / 1024:,.1f} MB; the console takes "
                             f"files up to {max_mb:g} MB (use a batch job for more)")
    lower = name.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
            if rows > max_rows:
                raise UnreadableFile(_too_many(name, rows, max_rows))
            frame = pd.read_parquet(io.BytesIO(data))
        elif lower.endswith((".csv", ".txt")):
            frame = pd.read_csv(io.BytesIO(data), nrows=max_rows + 1)
        else:
            raise UnreadableFile(f"{name}: expected a .csv or .parquet file")
    except UnreadableFile:
        raise
    except Exception as exc:  # pandas/pyarrow raise many kinds for a bad file
        raise UnreadableFile(f"{name}: not a readable table ({type(exc).__name__})") from None
    if len(frame) == 0:
        raise UnreadableFile(f"{name}: no rows")
    if len(frame) > max_rows:
        raise UnreadableFile(_too_many(name, len(frame), max_rows, more=True))
    return frame


def _too_many(name: str, rows: int, max_rows: int, more: bool = False) -> str:
    count = f"over {max_rows:,}" if more else f"{rows:,}"
    return (f"{name}: {count} rows; the console scores at most {max_rows:,} (score larger "
            "tables with `python -m ray_jobs.batch_predict`, docs/scale.md)")


def missing_columns(frame: pd.DataFrame, metadata: Metadata) -> list[str]:
    names = set(map(str, frame.columns))
    return [c["name"] for c in metadata.inputs if c["name"] not in names]


def _json_value(value: Any, numeric: bool) -> Any:
    """A cell as JSON: NaN/None -> null; in numeric columns a number-like string -> number
    (anything else is left as it is, for the service to reject with its reason)."""
    if value is None:
        return None
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if numeric and isinstance(value, str):
        text = value.strip()
        if text == "":
            return None
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() \
            else number
    return value


def records(frame: pd.DataFrame, metadata: Metadata) -> list[dict]:
    """The model's columns of ``frame`` as ``/predict`` records (other columns are kept aside)."""
    kinds = {c["name"]: c["kind"] for c in metadata.inputs}
    columns = {name: [_json_value(v, kinds[name] == "numeric") for v in frame[name].tolist()]
               for name in kinds}
    return [{name: columns[name][i] for name in kinds} for i in range(len(frame))]


@dataclass
class Scored:
    """The outcome of scoring a file."""

    frame: pd.DataFrame  # the input rows that were scored, with the prediction columns added
    rejected: pd.DataFrame  # row (0-based, of the file), field, reason, error
    requests: int = 0
    versions: set[str] = field(default_factory=set)


def _score_rows(send: Predict, rows: list[int], payload: list[dict],
                answers: dict[int, tuple[Answer, int]], rejected: list[dict],
                counter: list[int]) -> None:
    """Score ``rows`` (file row numbers). A rejected batch: the row the service names is tried
    alone and the rest again; without a named row the batch is bisected. Either way each bad
    row ends up rejected on its own, with its own reason."""
    while rows:
        counter[0] += 1
        result = send([payload[r] for r in rows])
        if isinstance(result, Answer):
            for i, r in enumerate(rows):
                answers[r] = (result, i)
            return
        if len(rows) == 1:
            rejected.append({"row": rows[0], "field": result.field, "reason": result.reason,
                             "error": result.error})
            return
        named = result.row
        if named is not None and 0 <= named < len(rows):
            _score_rows(send, [rows[named]], payload, answers, rejected, counter)
            rows = rows[:named] + rows[named + 1:]
            continue
        middle = len(rows) // 2
        _score_rows(send, rows[:middle], payload, answers, rejected, counter)
        rows = rows[middle:]


def score(frame: pd.DataFrame, metadata: Metadata, send: Predict,
          batch_rows: int = DEFAULT_BATCH_ROWS, progress: Progress | None = None) -> Scored:
    """Score every row of ``frame`` with ``send`` (one ``/predict`` call) in batches of
    ``batch_rows``; rejected rows are listed with the service's reason, the rest scored.
    :class:`ServiceDown` from ``send`` propagates (the service is gone: no partial file)."""
    payload = records(frame, metadata)
    answers: dict[int, tuple[Answer, int]] = {}
    rejected: list[dict] = []
    counter = [0]
    total = len(payload)
    for start in range(0, total, batch_rows):
        rows = list(range(start, min(start + batch_rows, total)))
        _score_rows(send, rows, payload, answers, rejected, counter)
        if progress is not None:
            progress(rows[-1] + 1, total)
    scored_rows = sorted(answers)
    out = frame.iloc[scored_rows].copy()
    out[PREDICTION] = [answers[r][0].predictions[answers[r][1]] for r in scored_rows]
    labels = next((a.class_labels for a, _ in answers.values() if a.class_labels), None)
    if labels:
        for k, label in enumerate(labels):
            out[f"probability_{label}"] = [
                float(answers[r][0].probabilities[answers[r][1]][k])  # type: ignore[index]
                for r in scored_rows]
    out[PREDICTION_ID] = [answers[r][0].prediction_ids[answers[r][1]] for r in scored_rows]
    out[MODEL_VERSION] = [answers[r][0].model_version for r in scored_rows]
    rejected_frame = pd.DataFrame(rejected, columns=["row", "field", "reason", "error"])
    return Scored(out, rejected_frame.sort_values("row", ignore_index=True), counter[0],
                  {a.model_version for a, _ in answers.values()})


def service_sender(serve_url: str, timeout: float) -> Predict:
    """``send`` for :func:`score`: ``POST /predict`` on ``serve_url``."""
    def send(batch: list[dict]) -> Answer | Rejection:
        return predict(serve_url, batch, timeout)
    return send


def summary(scored: Scored, task: str) -> pd.DataFrame:
    """Counts per class (classification: ``class``, ``rows``, ``share``) or a 20-bin histogram
    of the predicted values (regression: ``low``, ``high``, ``rows``)."""
    values = scored.frame[PREDICTION] if PREDICTION in scored.frame else pd.Series(dtype=float)
    if task == "classification":
        counts = values.astype(str).value_counts().rename_axis("class").reset_index(name="rows")
        counts["share"] = counts["rows"] / max(int(counts["rows"].sum()), 1)
        return counts
    numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    if len(numbers) == 0:
        return pd.DataFrame(columns=["low", "high", "rows"])
    counts, edges = np.histogram(numbers, bins=20)
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "rows": counts})


def to_download(frame: pd.DataFrame, name: str) -> tuple[bytes, str, str]:
    """The scored frame in the upload's format: (bytes, file name, MIME type)."""
    stem = name.rsplit(".", 1)[0] or "scored"
    if name.lower().endswith((".parquet", ".pq")):
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue(), f"{stem}_scored.parquet", "application/octet-stream"
    return frame.to_csv(index=False).encode(), f"{stem}_scored.csv", "text/csv"

