"""The Service page's figures: health, replicas (Ray Serve's REST API), the service's metrics.

- Replicas per deployment and their state: ``GET {dashboard}/api/serve/applications/`` on the
  serving cluster's dashboard (``RAYLANE_SERVE_DASHBOARD``, else ``RAY_ADDRESS``; Ray 2.60
  clusters use token authentication: the token comes from ``RAY_AUTH_TOKEN``, else the file
  ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, sent as ``Authorization: Bearer``).
- Metrics: the Prometheus text every Ray node's metrics agent exports. Its address is
  ``RAYLANE_METRICS_URL`` (comma-separated) if set, else each alive node's
  ``http://<ip>:<metricsExportPort>/metrics`` as the dashboard lists them (``/nodes?view=summary``).
  Latency percentiles are interpolated in the histogram buckets of
  ``raylane_prediction_latency_ms`` (cumulative since the replicas started); the request rate is
  the increase of ``raylane_predictions_total`` between two scrapes divided by the time between
  them (the page keeps its previous scrape).
- Autoscaling bounds: the Serve config file the service was deployed from.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from raylane.console.serving import ServiceDown, _connection_reason

MAX_METRICS_BYTES = 8 * 2**20
LATENCY = "raylane_prediction_latency_ms"
PREDICTIONS = "raylane_predictions_total"
REJECTED = "raylane_rejected_requests_total"
SERVER_ERRORS = "raylane_server_errors_total"


# ---------------------------------------------------------------- Ray's dashboard


def serve_dashboard(ray_address: str, env: dict[str, str] | None = None) -> str:
    """The dashboard of the cluster that runs Serve: ``RAYLANE_SERVE_DASHBOARD`` when the jobs
    run on another cluster (as on Kubernetes), else ``ray_address``."""
    env = os.environ if env is None else env
    return (env.get("RAYLANE_SERVE_DASHBOARD") or ray_address).strip().rstrip("/")


def _dashboard_get(url: str, timeout: float, token: str | None) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = requests.get(url, headers=headers, timeout=timeout)
    except requests.Timeout:
        raise ServiceDown(f"no answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise ServiceDown(_connection_reason(exc)) from None
    if response.status_code in (401, 403):
        raise ServiceDown(f"{response.status_code}: the cluster wants a valid auth token (set "
                          "RAY_AUTH_TOKEN, or put it in ~/.ray/auth_token)")
    if response.status_code != 200:
        raise ServiceDown(f"GET {url.split('://', 1)[-1].split('/', 1)[-1]} answered "
                          f"{response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise ServiceDown("the dashboard answered without JSON") from None


@dataclass(frozen=True)
class DeploymentStatus:
    application: str
    app_status: str
    deployment: str
    status: str
    target_replicas: int | None
    replica_states: dict[str, int]  # RUNNING -> 2, STARTING -> 1, ...
    message: str = ""
    started_at: float | None = None  # the earliest running replica's start (unix seconds)


def serve_applications(ray_address: str, timeout: float, token: str | None = None
                       ) -> list[DeploymentStatus]:
    """Every deployment of every Serve application with its replicas counted by state."""
    body = _dashboard_get(f"{ray_address}/api/serve/applications/", timeout, token)
    return deployments_from(body)


def deployments_from(body: dict) -> list[DeploymentStatus]:
    out = []
    for app_name, app in sorted((body.get("applications") or {}).items()):
        for dep_name, dep in sorted((app.get("deployments") or {}).items()):
            states: dict[str, int] = {}
            starts = []
            for replica in dep.get("replicas") or []:
                state = str(replica.get("state", "UNKNOWN"))
                states[state] = states.get(state, 0) + 1
                if state == "RUNNING" and replica.get("start_time_s"):
                    starts.append(float(replica["start_time_s"]))
            out.append(DeploymentStatus(
                application=app_name, app_status=str(app.get("status", "")),
                deployment=dep_name, status=str(dep.get("status", "")),
                target_replicas=dep.get("target_num_replicas"), replica_states=states,
                message=str(dep.get("message") or app.get("message") or "")[:300],
                started_at=min(starts, default=None),
            ))
    return out


def metrics_urls(ray_address: str, timeout: float, token: str | None = None,
                 env: dict[str, str] | None = None) -> list[str]:
    """Where to scrape: ``RAYLANE_METRICS_URL`` or every alive node's metrics agent."""
    env = os.environ if env is None else env
    if env.get("RAYLANE_METRICS_URL", "").strip():
        return [u.strip() for u in env["RAYLANE_METRICS_URL"].split(",") if u.strip()]
    body = _dashboard_get(f"{ray_address}/nodes?view=summary", timeout, token)
    urls = []
    for node in ((body.get("data") or {}).get("summary") or []):
        raylet = node.get("raylet") or {}
        port = raylet.get("metricsExportPort")
        ip = raylet.get("nodeManagerAddress") or node.get("ip")
        if raylet.get("state", "ALIVE") == "ALIVE" and port and ip and int(port) > 0:
            urls.append(f"http://{ip}:{port}/metrics")
    return urls


# ---------------------------------------------------------------- Prometheus metrics


@dataclass
class Scrape:
    """The service's metric samples at one moment: (name, labels) -> value."""

    at: float
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def select(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Samples of ``name`` (with or without Ray's ``ray_`` prefix)."""
        return [(dict(labels), value) for (n, labels), value in self.samples.items()
                if n == name or n == f"ray_{name}"]


def parse_metrics(text: str, at: float | None = None) -> Scrape:
    """The raylane_* samples of a Prometheus text exposition (other metrics are skipped)."""
    scrape = Scrape(time.time() if at is None else at)
    wanted = [line for line in text.splitlines()
              if line.startswith(("raylane_", "ray_raylane_"))]
    for family in text_string_to_metric_families("\n".join(wanted) + "\n"):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items()
                                  if k not in {"Component", "NodeAddress", "SessionName",
                                               "WorkerId", "JobId", "ReplicaId"}))
            key = (sample.name, labels)
            scrape.samples[key] = scrape.samples.get(key, 0.0) + float(sample.value)
    return scrape


def scrape_metrics(urls: list[str], timeout: float) -> Scrape:
    """One scrape of every URL, summed (replicas on several nodes)."""
    if not urls:
        raise ServiceDown("no metrics endpoint found (set RAYLANE_METRICS_URL)")
    texts = []
    for url in urls:
        try:
            response = requests.get(url, timeout=timeout, stream=True)
            body = response.raw.read(MAX_METRICS_BYTES, decode_content=True)
        except requests.Timeout:
            raise ServiceDown(f"{url}: no answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            raise ServiceDown(f"{url}: {_connection_reason(exc)}") from None
        if response.status_code != 200:
            raise ServiceDown(f"{url} answered {response.status_code}")
        texts.append(body.decode("utf-8", "replace"))
    return parse_metrics("\n".join(texts))


def total(scrape: Scrape, name: str, **match: str) -> float:
    return sum(v for labels, v in scrape.select(name)
               if all(labels.get(k) == want for k, want in match.items()))


def by_label(scrape: Scrape, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in scrape.select(name):
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


def buckets(scrape: Scrape, name: str = LATENCY) -> list[tuple[float, float]]:
    """The histogram's cumulative buckets (upper bound, count), summed over routes, sorted."""
    out: dict[float, float] = {}
    for labels, value in scrape.select(f"{name}_bucket"):
        bound = float(labels.get("le", "inf").replace("+Inf", "inf"))
        out[bound] = out.get(bound, 0.0) + value
    return sorted(out.items())


def percentile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile (0-1) by linear interpolation inside its bucket, as Prometheus's
    ``histogram_quantile`` does (the highest finite bound when it falls in the +Inf bucket).
    None without observations."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    count = cumulative[-1][1]
    rank = q * count
    lower_bound, lower_count = 0.0, 0.0
    for bound, cum in cumulative:
        if cum >= rank:
            if math.isinf(bound):
                return lower_bound
            if cum == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (cum - lower_count)
        lower_bound, lower_count = bound, cum
    return lower_bound


def difference(current: list[tuple[float, float]], previous: list[tuple[float, float]]
               ) -> list[tuple[float, float]]:
    """Buckets of the observations between two scrapes (a restart resets: use ``current``)."""
    before = dict(previous)
    delta = [(b, c - before.get(b, 0.0)) for b, c in current]
    return current if any(c < 0 for _, c in delta) else delta


def request_rate(current: Scrape, previous: Scrape | None) -> float | None:
    """Requests per second answered between two scrapes (None: one scrape, or no time between)."""
    if previous is None or current.at - previous.at <= 0:
        return None
    delta = total(current, PREDICTIONS) - total(previous, PREDICTIONS)
    if delta < 0:  # a replica restarted: its counter began again
        return None
    return delta / (current.at - previous.at)


# ---------------------------------------------------------------- the Serve config


@dataclass(frozen=True)
class Autoscaling:
    application: str
    deployment: str
    min_replicas: int | None
    max_replicas: int | None
    initial_replicas: int | None
    target_ongoing_requests: float | None
    num_replicas: int | str | None  # a fixed count (no autoscaling)


def autoscaling_bounds(config_path: Path) -> list[Autoscaling]:
    """Each deployment's autoscaling bounds from a Serve config file (or its fixed replicas)."""
    config = yaml.safe_load(Path(config_path).read_text()) or {}
    out = []
    for app in config.get("applications") or []:
        for dep in app.get("deployments") or []:
            auto = dep.get("autoscaling_config") or {}
            out.append(Autoscaling(
                application=str(app.get("name", "")), deployment=str(dep.get("name", "")),
                min_replicas=auto.get("min_replicas"), max_replicas=auto.get("max_replicas"),
                initial_replicas=auto.get("initial_replicas"),
                target_ongoing_requests=auto.get("target_ongoing_requests"),
                num_replicas=dep.get("num_replicas"),
            ))
    return out
