"""The alert rules (kuberay/observability/alerts.yaml): valid for Prometheus (`promtool check
rules`), each one unit-tested on series that mean its fault (`promtool test rules`,
tests/prometheus/alerts_test.yaml) and shown able to fail, on metric names the code really
exports, with a runbook entry each; the PrometheusRule is generated from the same file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from raylane.observability import alerts, manifests, promql

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / manifests.ALERTS
UNIT_TESTS = REPO / "tests" / "prometheus" / "alerts_test.yaml"
RUNBOOK = REPO / "docs" / "operations.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool not found: `make test` installs Debian's prometheus package "
                    "(or: apt-get install prometheus)")
    return found


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def alert_names() -> list[str]:
    return [r["alert"] for r in rules() if "alert" in r]


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd, check=False)


def test_the_rules_file_is_valid():
    out = run_promtool("check", "rules", str(ALERTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{len(alert_names())} rules found" in out.stdout


def test_every_alert_passes_its_unit_tests():
    out = run_promtool("test", "rules", UNIT_TESTS.name, cwd=UNIT_TESTS.parent)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    expected = {"RaylaneServerErrors", "RaylaneLatencyP99OverSLO", "RaylaneReplicasBelowMin",
                "RaylaneRegistryUnreachable", "RaylaneModelLoadGaveUp",
                "RaylanePendingVersionStuck", "RaylanePredictionLogDroppingRows",
                "RaylaneContinuousTrainingFailed", "RaylaneNoMonitoringReport"}
    assert set(alert_names()) == expected
    for name in expected:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays quiet"


@pytest.mark.parametrize("mutation", [
    ("> 0.01", "> 0.5"),             # 5xx threshold
    ("> 50", "> 500"),               # the latency SLO
    ("for: 15m", "for: 30m"),        # pending version
    ("keep_firing_for: 1h", ""),     # CT failure forgotten when its RayJob goes
    ("> 8 * 3600", "> 24 * 3600"),   # monitoring report age
])
def test_the_unit_tests_catch_a_changed_rule(tmp_path, mutation):
    old, new = mutation
    text = ALERTS.read_text()
    assert old in text
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "alerts.yaml").write_text(text.replace(old, new, 1))
    unit = UNIT_TESTS.read_text().replace("../../kuberay/observability/alerts.yaml",
                                          "rules/alerts.yaml")
    (tmp_path / "t.yaml").write_text(unit)
    out = run_promtool("test", "rules", "t.yaml", cwd=tmp_path)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr, out.stdout


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b((?:ray_|kuberay_|raylane_)[a-z_]+)\b", expr))
    return {n.removesuffix("_bucket") for n in names}


def test_the_rules_use_metrics_the_code_exports():
    """raylane_* of raylane/serving/telemetry.py (scraped with Ray's `ray_` prefix), Ray Serve's
    replica gauge, the KubeRay operator's RayJob status, the monitoring exporter's gauge."""
    import ray.serve

    telemetry = (REPO / "raylane" / "serving" / "telemetry.py").read_text()
    exporter = (REPO / "raylane" / "observability" / "exporter.py").read_text()
    serve_src = "\n".join(p.read_text() for p in Path(ray.serve.__file__).parent.rglob("*.py")
                          if "replica_healthy" in p.read_text())
    seen = set()
    for rule in rules():
        for name in _metric_names(rule["expr"]):
            seen.add(name)
            if name.startswith("ray_raylane_"):
                assert f'"{name.removeprefix("ray_")}"' in telemetry, name
            elif name.startswith("ray_serve_"):
                assert f'"{name.removeprefix("ray_")}"' in serve_src, name
            elif name.startswith("raylane_monitoring_"):
                assert f'"{name}"' in exporter, name
            else:
                assert name == "kuberay_job_deployment_status", name  # KubeRay v1.7.0
    assert len(seen) >= 9


def test_replicas_below_min_follows_the_serve_config():
    serve = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    (dep,) = serve["applications"][0]["deployments"]
    rule = next(r for r in rules() if r["alert"] == "RaylaneReplicasBelowMin")
    assert f'deployment="{dep["name"]}"' in rule["expr"]
    assert rule["expr"].strip().endswith(f"< {dep['autoscaling_config']['min_replicas']}")


def test_every_alert_has_a_runbook_entry():
    text = RUNBOOK.read_text()
    headings = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
                for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for rule in rules():
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "docs/operations.md" and anchor == rule["alert"].lower(), runbook
        assert anchor in headings, f"{rule['alert']}: no heading in {RUNBOOK.name}"


def test_the_prometheus_rule_is_generated_from_the_rules_file():
    generated = REPO / manifests.PROMETHEUS_RULE
    assert generated.read_text() == manifests.render_prometheus_rule(ALERTS), (
        "run `python -m raylane.deploy.render`")
    obj = yaml.safe_load(generated.read_text())
    assert obj["kind"] == "PrometheusRule" and obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert obj["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]


def test_the_rules_file_is_generated_from_the_shared_promql():
    """alerts.yaml is written from raylane.observability.alerts, whose expressions are the
    console's Metrics queries (raylane.observability.promql)."""
    assert ALERTS.read_text() == alerts.render(), "run `python -m raylane.deploy.render`"
    exprs = {r["alert"]: r["expr"] for r in rules()}
    assert promql.server_error_ratio() in exprs["RaylaneServerErrors"]
    assert promql.latency_quantile_ms(0.99) in exprs["RaylaneLatencyP99OverSLO"]
    assert promql.healthy_replicas() in exprs["RaylaneReplicasBelowMin"]
    assert promql.prediction_log_dropped() in exprs["RaylanePredictionLogDroppingRows"]
