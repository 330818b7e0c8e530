"""The model service as the console's Predict page sees it: its schema, a form, one prediction.

Everything goes over the service's HTTP API (``/metadata``, ``/predict``); nothing is loaded in
process. Functions here take plain values and return plain values, so they are tested without
Streamlit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import requests

# Bounded: a form's answer is one row; a file's batch a few hundred.
MAX_ERROR_CHARS = 500


class ServiceDown(Exception):
    """The service did not answer (refused, timed out, 5xx, not JSON): ``reason`` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Rejection:
    """A 4xx answer of the service: what it said, the field it named and its reason code."""

    status: int
    error: str
    field: str | None
    reason: str

    @property
    def row(self) -> int | None:
        """The row the message names (``... (row 3)``), if any."""
        marker = "(row "
        at = self.error.rfind(marker)
        if at < 0:
            return None
        digits = self.error[at + len(marker):].split(")", 1)[0].split(";", 1)[0].strip()
        return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class Answer:
    """A ``/predict`` answer."""

    model_name: str
    model_version: str
    predictions: list
    prediction_ids: list[str]
    probabilities: list[list[float]] | None = None
    class_labels: list[str] | None = None

    def probability_frame(self, row: int = 0) -> pd.DataFrame | None:
        """Row ``row``'s class probabilities: columns ``class``, ``probability`` (or None)."""
        if not self.probabilities or not self.class_labels:
            return None
        return pd.DataFrame({"class": [str(c) for c in self.class_labels],
                             "probability": [float(p) for p in self.probabilities[row]]})


@dataclass(frozen=True)
class FormField:
    """One input of the Predict form, derived from a ``/metadata`` column."""

    name: str
    kind: str  # numeric | categorical
    dtype: str
    nullable: bool
    integer: bool = False
    categories: list[str] | None = None  # only when the service lists them
    category_count: int | None = None
    low: float | None = None  # the training range, when known
    high: float | None = None
    default: Any = None
    help: str = ""


@dataclass
class Metadata:
    """What ``/metadata`` says about the served model (the fields the console uses)."""

    name: str
    version: str
    alias: str | None
    model_uri: str
    run_id: str | None
    task: str
    target: str
    inputs: list[dict]
    class_labels: list[str] | None
    load_status: dict = field(default_factory=dict)
    last_error: dict | None = None

    @classmethod
    def from_json(cls, body: dict) -> Metadata:
        return cls(
            name=str(body["name"]), version=str(body["version"]), alias=body.get("alias"),
            model_uri=str(body.get("model_uri", "")), run_id=body.get("run_id"),
            task=str(body["task"]), target=str(body.get("target", "")),
            inputs=list(body["inputs"]), class_labels=body.get("class_labels"),
            load_status=body.get("load_status") or {}, last_error=body.get("last_error"),
        )


def _get_json(url: str, timeout: float) -> tuple[int, Any]:
    try:
        response = requests.get(url, timeout=timeout)
    except requests.Timeout:
        raise ServiceDown(f"no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise ServiceDown(_connection_reason(exc)) from None
    return response.status_code, _json_or_none(response)


def _json_or_none(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _connection_reason(exc: requests.RequestException) -> str:
    text = str(exc)
    if "Connection refused" in text or "Errno 111" in text:
        return "connection refused"
    if "Name or service not known" in text or "NameResolutionError" in text:
        return "unknown host"
    return type(exc).__name__


def fetch_metadata(serve_url: str, timeout: float) -> Metadata:
    """``GET /metadata``; :class:`ServiceDown` when it does not answer with a model."""
    status, body = _get_json(f"{serve_url}/metadata", timeout)
    if status == 503:
        raise ServiceDown("it is up but has no model loaded yet (503): try again in a minute")
    if status != 200 or not isinstance(body, dict) or "inputs" not in body:
        raise ServiceDown(f"GET /metadata answered {status}")
    return Metadata.from_json(body)


def fetch_health(serve_url: str, timeout: float) -> dict:
    """``GET /healthz``: ``{"status": ...}`` plus the version; a 503 body is returned too."""
    status, body = _get_json(f"{serve_url}/healthz", timeout)
    if not isinstance(body, dict):
        raise ServiceDown(f"GET /healthz answered {status} without JSON")
    return {**body, "http_status": status}


def predict(serve_url: str, records: list[dict], timeout: float) -> Answer | Rejection:
    """``POST /predict`` with ``records``: an :class:`Answer`, or the service's 4xx
    :class:`Rejection`; :class:`ServiceDown` when it does not answer or fails (5xx)."""
    try:
        response = requests.post(
            f"{serve_url}/predict", data=json.dumps({"records": records}),
            headers={"Content-Type": "application/json"}, timeout=timeout,
        )
    except requests.Timeout:
        raise ServiceDown(f"no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise ServiceDown(_connection_reason(exc)) from None
    body = _json_or_none(response)
    if 400 <= response.status_code < 500:
        body = body if isinstance(body, dict) else {}
        return Rejection(response.status_code,
                         str(body.get("error") or response.text)[:MAX_ERROR_CHARS],
                         body.get("field"), str(body.get("reason") or "rejected"))
    if response.status_code != 200 or not isinstance(body, dict):
        reason = body.get("reason") if isinstance(body, dict) else None
        raise ServiceDown(f"POST /predict answered {response.status_code}"
                          + (f" ({reason})" if reason else ""))
    return Answer(
        model_name=str(body["model_name"]), model_version=str(body["model_version"]),
        predictions=list(body["predictions"]), prediction_ids=list(body["prediction_ids"]),
        probabilities=body.get("probabilities"), class_labels=body.get("class_labels"),
    )


def _is_integer_dtype(dtype: str) -> bool:
    return dtype.lower().startswith(("int", "uint"))


Range = tuple[float, float, float]  # training min, max, median


def form_fields(metadata: Metadata, ranges: dict[str, Range] | None = None,
                categories: dict[str, list[str]] | None = None) -> list[FormField]:
    """The form's inputs: one per model column, in the model's order.

    Categorical columns get select boxes with the categories the version trained on (from
    ``categories``, read from its reference profile, else from ``/metadata`` when the service
    lists them with ``metadata_categories``), and a free text input only when neither knows them;
    numeric columns get the training range from ``ranges`` when known (their default is the
    training median).
    """
    ranges = ranges or {}
    known = categories or {}
    fields = []
    for col in metadata.inputs:
        name, kind, dtype = str(col["name"]), str(col["kind"]), str(col.get("dtype", ""))
        nullable = bool(col.get("nullable", True))
        if kind == "categorical":
            categories = known.get(name) or col.get("categories")
            count = col.get("category_count")
            fields.append(FormField(
                name, kind, dtype, nullable, categories=list(categories) if categories else None,
                category_count=count, default=categories[0] if categories else None,
                help=(f"{count} categories in training" if count is not None else ""),
            ))
            continue
        integer = _is_integer_dtype(dtype)
        low, high, median = ranges.get(name, (None, None, None))
        default: float | int | None = None
        if median is not None:
            default = round(median) if integer else round(median, 4)
        help_text = (f"training range {_number(low)} to {_number(high)}"
                     if low is not None and high is not None else "")
        fields.append(FormField(name, kind, dtype, nullable, integer=integer, low=low, high=high,
                                default=default if default is not None else 0,
                                help=help_text))
    return fields


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"


def record_from_form(fields: list[FormField], values: dict[str, Any]) -> dict[str, Any]:
    """The ``/predict`` record for the form's values: a missing value is ``None`` (null), a
    number the type its column trained with; nothing else is checked here (the service does)."""
    record: dict[str, Any] = {}
    for f in fields:
        value = values.get(f.name)
        if value is None or (isinstance(value, str) and value.strip() == ""):
            record[f.name] = None
        elif f.kind == "numeric" and isinstance(value, float) and f.integer and value.is_integer():
            record[f.name] = int(value)
        else:
            record[f.name] = value
    return record


def training_ranges(profile_summary: dict | None) -> dict[str, Range]:
    """Numeric columns' (min, max, median) from a monitoring reference profile's
    ``summary.json`` (quantiles 0, 1 and 0.5 of the training sample); empty without one."""
    if not profile_summary:
        return {}
    out = {}
    for name, col in (profile_summary.get("columns") or {}).items():
        quantiles = col.get("quantiles") or {}
        low, high = quantiles.get("0.0"), quantiles.get("1.0")
        median = quantiles.get("0.5", low)
        if col.get("kind") == "numeric" and low is not None and high is not None:
            out[name] = (float(low), float(high), float(median))
    return out


def training_categories(profile_summary: dict | None) -> dict[str, list[str]]:
    """Categorical columns' training categories from a reference profile's ``summary.json``,
    in the order training saw them; empty without one."""
    if not profile_summary:
        return {}
    return {
        name: [str(c) for c in col["training_categories"]]
        for name, col in (profile_summary.get("columns") or {}).items()
        if col.get("kind") == "categorical" and col.get("training_categories")
    }


def reference_summary(tracking_uri: str, name: str, version: str,
                      timeout_s: float = 10.0) -> dict | None:
    """The version's monitoring reference ``summary.json`` from MLflow (per-column training
    summaries), or None: no profile, or MLflow not reachable (the form then has no ranges)."""
    import tempfile

    from raylane.console.registry_access import quick
    from raylane.monitoring.reference import REFERENCE_TAG, SUMMARY_FILE
    from raylane.tracking.runs import mlflow_client

    try:
        with quick(timeout_s):
            client = mlflow_client(tracking_uri)
            uri = (client.get_model_version(name, version).tags or {}).get(REFERENCE_TAG)
            if not uri or not uri.startswith("runs:/"):
                return None
            run_id, _, path = uri.removeprefix("runs:/").partition("/")
            with tempfile.TemporaryDirectory(prefix="raylane-console-") as tmp:
                local = client.download_artifacts(run_id, f"{path}/{SUMMARY_FILE}", tmp)
                with open(local) as f:
                    return json.load(f)
    except Exception:  # best effort: ranges are a help, the form works without them
        return None


def field_errors(rejection: Rejection, fields: list[FormField]) -> dict[str, str]:
    """The service's refusal keyed by the form field it names (``_form`` when it names none)."""
    names = {f.name for f in fields}
    return {rejection.field if rejection.field in names else "_form": rejection.error}
