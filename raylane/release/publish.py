"""Publishing a fitted pipeline: ONNX export -> parity check -> registry version -> promotion.

The one path by which a raylane model reaches the registry (the training job, the serving tests
and the serving benchmark all call :func:`publish`). A graph that fails the parity check is
never registered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sklearn.pipeline import Pipeline

from raylane.config import ExportConfig
from raylane.data.read import Split
from raylane.model.metrics import Metric
from raylane.model.onnx_model import OnnxModel
from raylane.model.schema import FeatureSchema
from raylane.model.tags import MODEL_VERSION, PARITY, PARITY_MAX_ABS_DIFF
from raylane.monitoring.reference import attach_profile
from raylane.release.decision import Decision, decision_tags, record
from raylane.release.export import ParityError, ParityReport, check_parity, to_onnx
from raylane.release.gates import GateResult
from raylane.release.judging import JudgingSet, decision_from, judge
from raylane.tracking.registry import log_onnx_model, register_version
from raylane.tracking.runs import RunLog


@dataclass
class Published:
    """What :func:`publish` registered: the graph, its parity report, version and decision."""

    onnx_bytes: bytes
    parity: ParityReport
    model_id: str
    version: ModelVersion
    decision: Decision


def publish(
    pipeline: Pipeline,
    schema: FeatureSchema,
    holdout: Split,
    *,
    metric: Metric,
    gates: GateResult,
    client: MlflowClient,
    registered_model: str,
    run_id: str,
    export: ExportConfig | None = None,
    tags: dict[str, str] | None = None,
    metadata: dict | None = None,
    promote: bool = True,
    judging: JudgingSet | None = None,
    stage: Callable[[str], AbstractContextManager] = lambda name: contextlib.nullcontext(),
    on_registered: Callable[[str], None] | None = None,
    raw_holdout: pd.DataFrame | None = None,
    reference: pd.DataFrame | None = None,
) -> Published:
    """Export ``pipeline``, check the graph against it on ``holdout``, log it from run ``run_id``,
    register it as a new version of ``registered_model`` and decide on promotion.

    The parity report goes to the run (``export/parity.json``, ``parity.*`` metrics, tag
    ``raylane.parity``); on failure :class:`ParityError` is raised and nothing is registered.
    The version gets ``tags``; the MLmodel metadata gets the feature schema, ``source_run_id``
    and ``metadata``. The challenger's graph and the current champion's graph are scored with
    ``metric`` on ``judging``'s rows (default: ``holdout``; see raylane/release/judging.py) and the
    challenger becomes ``champion`` if ``gates`` passed and it wins; with ``promote=False`` it is
    only made ``challenger`` (a candidate to roll out by hand). The version and the run are
    tagged with the verdict (scores, rows, holdout definition) and the decision.

    The decision is made before the version is registered, and the version is created with
    its decision tags: a failure while deciding registers nothing.

    ``stage(name)`` wraps each step ("export", "parity", "decision", "registration" and
    "promotion", which moves the aliases; the job passes :func:`raylane.training.interrupts.stage`
    so a stop
    says where it landed) and ``on_registered`` is told the new version number as soon as it
    exists. ``raw_holdout`` (the holdout rows as in the data) is what the parity check
    sends the graph through serving's request decoding. ``reference`` (a sample of the
    training rows) becomes the version's monitoring reference profile
    (:mod:`raylane.monitoring.reference`).
    """
    export = export or ExportConfig()
    run = RunLog(client, run_id)
    with stage("export"):
        onnx_bytes = to_onnx(pipeline, schema)
        onnx_model = OnnxModel(onnx_bytes, schema)
    with stage("parity"):
        parity = check_parity(pipeline, onnx_model, holdout.X, export.parity_atol,
                              export.parity_rtol, export.parity_max_mismatch_fraction,
                              raw=raw_holdout)
        run.json(parity.as_dict(), "export/parity.json")
        run.metrics({"parity.max_abs_diff": parity.max_abs_diff,
                     "parity.mismatched_rows": parity.mismatched_rows})
        run.tags({PARITY: "passed" if parity.passed else "failed"})
        if not parity.passed:
            raise ParityError(
                f"ONNX parity check failed on {parity.rows} holdout rows: "
                f"{parity.mismatched_rows} differ beyond atol={parity.atol}, rtol={parity.rtol} "
                f"(max |diff| {parity.max_abs_diff:.3g}); nothing was registered"
            )

    with stage("decision"):  # before registering: no version exists without its decision
        verdict = judge(client, registered_model, onnx_model, judging or JudgingSet(rows=holdout),
                        metric)
        decision = decision_from(verdict, gates)
        if not promote:
            decision.promoted = False
            decision.reasons = ["promotion not requested (registered as challenger only)"]
        judged = {**verdict.tags(), **decision_tags(decision, metric)}
    with stage("registration"):
        logged = log_onnx_model(
            client, run_id, onnx_bytes, schema,
            input_example=holdout.X.head(3),
            output_example=_output_example(onnx_model, holdout.X.head(3)),
            extra_metadata={"source_run_id": run_id, "tuning_metric": metric.name,
                            **(metadata or {})},
        )
        version = register_version(
            client, logged, registered_model, run_id,
            tags={**(tags or {}), PARITY_MAX_ABS_DIFF: f"{parity.max_abs_diff:.3g}",
                  **judged},
        )
        if reference is not None:
            attach_profile(client, version, run_id, reference, onnx_model, holdout)
        if on_registered is not None:
            on_registered(str(version.version))
    with stage("promotion"):
        record(client, version, decision, metric, tagged=True)
        run.json({"verdict": asdict(verdict), "decision": asdict(decision)},
                 "judging/decision.json")
        run.tags({MODEL_VERSION: str(version.version), **judged})
    return Published(onnx_bytes=onnx_bytes, parity=parity, model_id=logged.model_id,
                     version=version, decision=decision)


def _output_example(model: OnnxModel, rows: pd.DataFrame) -> pd.DataFrame:
    """What the graph returns for ``rows``, as the signature's output (probabilities or values)."""
    pred = model.predict_frame(rows)
    if model.schema.task == "classification":
        labels = model.schema.class_labels or []
        return pd.DataFrame(pred.probabilities, columns=[f"p_{c}" for c in labels])
    return pd.DataFrame({"prediction": pred.values})
