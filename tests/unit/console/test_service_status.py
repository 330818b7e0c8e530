"""The Service page's figures: Prometheus parsing, percentiles from buckets, rates, replicas,
autoscaling bounds, the Ray token; and the Predict form built from /metadata."""

from __future__ import annotations

import math

import pytest

from raylane.console.service_status import (
    LATENCY,
    PREDICTIONS,
    REJECTED,
    autoscaling_bounds,
    buckets,
    by_label,
    deployments_from,
    difference,
    parse_metrics,
    percentile,
    request_rate,
    total,
)
from raylane.console.serving import (
    Metadata,
    Rejection,
    field_errors,
    form_fields,
    record_from_form,
    training_categories,
    training_ranges,
)

EXPOSITION = """\
# HELP ray_raylane_predictions_total Prediction requests answered.
# TYPE ray_raylane_predictions_total counter
ray_raylane_predictions_total{Component="core_worker",route="predict",ReplicaId="a"} 30.0
ray_raylane_predictions_total{model_version="2",route="predict",ReplicaId="b"} 10.0
ray_raylane_predictions_total{model_name="credit",model_version="2",route="invocations"} 2.0
# TYPE ray_raylane_rejected_requests_total counter
ray_raylane_rejected_requests_total{reason="empty_batch",route="predict"} 3.0
ray_raylane_rejected_requests_total{reason="wrong_type",route="predict"} 1.0
ray_raylane_rejected_requests_total{reason="wrong_type",route="invocations"} 1.0
# TYPE ray_raylane_prediction_latency_ms histogram
ray_raylane_prediction_latency_ms_bucket{le="1.0",route="predict"} 10.0
ray_raylane_prediction_latency_ms_bucket{le="2.0",route="predict"} 30.0
ray_raylane_prediction_latency_ms_bucket{le="5.0",route="predict"} 40.0
ray_raylane_prediction_latency_ms_bucket{le="+Inf",route="predict"} 40.0
ray_raylane_prediction_latency_ms_count{route="predict"} 40.0
ray_raylane_prediction_latency_ms_sum{route="predict"} 70.0
ray_tasks{Component="raylet",Name="SERVE_REPLICA::raylane#RaylaneModel#x"} 0.0
"""


def test_parse_and_sum_the_services_metrics():
    scrape = parse_metrics(EXPOSITION, at=100.0)
    assert total(scrape, PREDICTIONS) == 42
    assert total(scrape, PREDICTIONS, route="predict") == 40
    assert by_label(scrape, REJECTED, "reason") == {"empty_batch": 3, "wrong_type": 2}
    assert buckets(scrape, LATENCY) == [(1.0, 10), (2.0, 30), (5.0, 40), (math.inf, 40)]
    assert not scrape.select("tasks")


def test_percentiles_interpolate_in_buckets():
    cumulative = [(1.0, 10.0), (2.0, 30.0), (5.0, 40.0), (math.inf, 40.0)]
    assert percentile(cumulative, 0.25) == pytest.approx(1.0)  # rank 10: top of bucket 1
    assert percentile(cumulative, 0.5) == pytest.approx(1.5)  # rank 20: halfway in (1, 2]
    assert percentile(cumulative, 0.99) == pytest.approx(2 + 3 * (39.6 - 30) / 10)
    assert percentile([(1.0, 0.0), (math.inf, 0.0)], 0.5) is None
    assert percentile([(1.0, 1.0), (math.inf, 5.0)], 0.9) == 1.0  # in +Inf: highest bound
    assert percentile([], 0.5) is None


def test_rate_and_window_between_two_scrapes():
    first = parse_metrics(EXPOSITION, at=100.0)
    later = parse_metrics(EXPOSITION.replace("} 30.0", "} 50.0"), at=110.0)
    assert request_rate(later, first) == pytest.approx(2.0)
    assert request_rate(later, None) is None
    assert request_rate(first, later) is None  # a counter went down: a restart
    now = [(1.0, 15.0), (math.inf, 50.0)]
    assert difference(now, [(1.0, 10.0), (math.inf, 40.0)]) == [(1.0, 5.0), (math.inf, 10.0)]
    assert difference(now, [(1.0, 20.0), (math.inf, 60.0)]) == now


def test_replicas_by_state_from_the_serve_rest_api():
    body = {"applications": {"raylane": {"status": "RUNNING", "deployments": {"RaylaneModel": {
        "status": "UPSCALING", "target_num_replicas": 3, "message": "",
        "replicas": [{"state": "RUNNING", "start_time_s": 50.0},
                     {"state": "RUNNING", "start_time_s": 40.0}, {"state": "STARTING"}]}}}}}
    (dep,) = deployments_from(body)
    assert (dep.application, dep.deployment, dep.status) == ("raylane", "RaylaneModel",
                                                             "UPSCALING")
    assert dep.replica_states == {"RUNNING": 2, "STARTING": 1} and dep.target_replicas == 3
    assert dep.started_at == 40.0
    assert deployments_from({"applications": {}}) == []


def test_autoscaling_bounds_of_the_projects_serve_config():
    from raylane.console.settings import ROOT

    (bounds,) = autoscaling_bounds(ROOT / "serve" / "config.yaml")
    assert (bounds.deployment, bounds.min_replicas, bounds.max_replicas) == ("RaylaneModel", 1, 4)
    assert bounds.target_ongoing_requests == 16



# ---------------------------------------------------------------- the Predict form

def metadata(categories: bool) -> Metadata:
    home = {"name": "Home", "kind": "categorical", "dtype": "str", "nullable": True,
            "category_count": 2}
    if categories:
        home["categories"] = ["owner", "rent"]
    return Metadata("credit", "2", "champion", "models:/credit@champion", "r", "classification",
                    "Status", [
                        {"name": "Age", "kind": "numeric", "dtype": "int64", "nullable": False},
                        {"name": "Income", "kind": "numeric", "dtype": "float64",
                         "nullable": True}, home], ["bad", "good"])


def test_form_fields_with_and_without_categories_and_ranges():
    summary = {"columns": {
        "Age": {"kind": "numeric", "quantiles": {"0.0": 18.0, "0.5": 36.0, "1.0": 68.0}},
        "Income": {"kind": "numeric", "quantiles": {"0.0": 0.0, "0.5": 120.5, "1.0": 959.0}},
        "Home": {"kind": "categorical"}}}
    ranges = training_ranges(summary)
    assert ranges == {"Age": (18.0, 68.0, 36.0), "Income": (0.0, 959.0, 120.5)}
    age, income, home = form_fields(metadata(True), ranges)
    assert (age.integer, age.low, age.high, age.default) == (True, 18.0, 68.0, 36)
    assert "training range 18 to 68" in age.help and not age.nullable
    assert (income.integer, income.default, income.nullable) == (False, 120.5, True)
    assert home.categories == ["owner", "rent"] and home.default == "owner"
    _, _, home = form_fields(metadata(False))
    assert home.categories is None and home.help == "2 categories in training"
    assert training_ranges(None) == {}


def test_categories_come_from_the_reference_profile_by_default():
    summary = {"columns": {
        "Home": {"kind": "categorical", "training_categories": ["owner", "parents", "rent"]},
        "Age": {"kind": "numeric", "quantiles": {"0.0": 18.0, "0.5": 36.0, "1.0": 68.0}}}}
    categories = training_categories(summary)
    assert categories == {"Home": ["owner", "parents", "rent"]}
    # the service does not list categories (no metadata_categories): the profile's are offered
    _, _, home = form_fields(metadata(False), training_ranges(summary), categories)
    assert home.categories == ["owner", "parents", "rent"] and home.default == "owner"
    assert training_categories(None) == {} and training_categories({"columns": {}}) == {}


def test_record_from_form_and_errors_at_their_field():
    fields = form_fields(metadata(True))
    record = record_from_form(fields, {"Age": 30.0, "Income": None, "Home": ""})
    assert record == {"Age": 30, "Income": None, "Home": None}
    assert type(record["Age"]) is int
    rejection = Rejection(400, "column 'Income': expected a finite number (row 0)", "Income",
                          "non_finite")
    assert rejection.row == 0
    assert field_errors(rejection, fields) == {"Income": rejection.error}
    assert field_errors(Rejection(400, "body: too big", "body", "too_large"), fields) == {
        "_form": "body: too big"}
    assert Rejection(400, "no row here", None, "x").row is None
