"""The table a job prints at the end: best trial, holdout vs baseline vs champion, parity,
version and alias, and where to look next."""

from __future__ import annotations

from raylane.training.job import PipelineResult


def _row(label: str, value: object) -> str:
    return f"  {label:<28} {value}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def render(result: PipelineResult) -> str:
    ev, search, dec = result.evaluation, result.search, result.decision
    m = ev.metric
    lines = ["", "=" * 72, "Raylane training summary", "=" * 72]
    lines.append(_row("trials", f"{len(search.trials)} ({search.errored_trials} errored)"))
    lines.append(_row(f"best valid {m}", _num(search.best_valid_score)))
    if result.pos_label is not None:
        lines.append(_row("positive class", f"{result.pos_label!r} (data.pos_label)"))
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in sorted(search.best_params.items()))
    lines.append(_row("best params", params))
    lines.append("")
    lines.append(f"  {'holdout metric':<16}{'model':>12}{'baseline':>12}{'champion':>12}")
    for name, value in ev.holdout.items():
        champ = _num(dec.champion_score) if name == m else ""
        lines.append(f"  {name:<16}{value:>12.4f}{_num(ev.baseline.get(name)):>12}{champ:>12}")
    lines.append("")
    lines.append(_row("diagnosis", f"{ev.diagnosis} (train-valid gap {ev.overfit_gap:.1%})"))
    p = result.parity
    lines.append(_row("ONNX parity", f"{'passed' if p.passed else 'FAILED'}: max |diff| "
                                     f"{p.max_abs_diff:.2g} on {p.rows} holdout rows"))
    lines.append(_row("gates", "passed" if result.gates.passed else "failed"))
    lines.append(_row("registered", f"models:/{result.model_name}/{result.version}"))
    lines.append(_row("alias", dec.alias + ("" if dec.promoted else " (not promoted)")))
    for reason in dec.reasons:
        lines.append(_row("", f"- {reason}"))
    lines.append(_row("MLflow run", f"{result.run_id} at {result.tracking_uri}"))
    lines.append(_row("took", f"{result.seconds:.0f} s"))
    lines.append("")
    lines.append("Look next:")
    if result.tracking_uri.startswith("sqlite:"):
        lines.append(f"  mlflow ui --backend-store-uri {result.tracking_uri}   # then :5000")
    else:
        lines.append(f"  MLflow UI: {result.tracking_uri}")
    lines.append("  Ray dashboard: http://127.0.0.1:8265 (while the cluster runs)")
    lines.append(f"  serve: model_uri models:/{result.model_name}@champion in serve/config.yaml")
    lines.append("=" * 72)
    return "\n".join(lines)
