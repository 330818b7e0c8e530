"""ONNX graph vs native XGBoost on 1,000-row batches, the same threads, measured interleaved.

    python -m benchmarks.bench_onnx_batch [--n-estimators 300] [--rows 1000] [--out FILE]

Fits the credit model (data/credit_data.csv; hist, depth 6, ``--n-estimators`` trees) as the
training job does, exports it with ``raylane.release.export.to_onnx`` and times, round-robin so
load on the machine hits every candidate alike, the median microseconds per row of:

* ``native_booster``: ``XGBClassifier.predict_proba`` on the preprocessed rows;
* ``onnx_session``: the exported graph's ONNX Runtime session on the prepared feeds (raw columns:
  its imputation and one-hot run inside the graph);
* ``native_pipeline`` / ``onnx_predict_frame``: both from raw DataFrame rows;

each with 1 thread and with 2 (XGBoost's ``n_jobs``, ONNX Runtime's intra-op threads). Also the
share of the graph's time per operator (ONNX Runtime's profiler, 1 thread), and the graph's tree
node alone on its own input, 1 thread, in layouts an export could choose: as exported, with its
trees split over several nodes, and as a ``TreeEnsembleRegressor`` giving the raw margin (what
a graph would feed to its own sigmoid); and as exported, called on blocks of rows (what a
caller could do to keep each tree in cache). Not in CI.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]


def session(onnx_bytes: bytes, threads: int, profile_dir: str | None = None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = f"{profile_dir}/ort"
    return ort.InferenceSession(onnx_bytes, sess_options=options,
                                providers=["CPUExecutionProvider"])


def interleaved(candidates: dict, rows: int, rounds: int, calls: int = 5) -> dict[str, float]:
    """Median microseconds per row of each candidate over ``rounds`` rounds of ``calls``."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            fn()
            started = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - started) / calls / rows * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def operator_shares(onnx_bytes: bytes, feeds: dict, calls: int = 30) -> dict[str, float]:
    """Share of the graph's kernel time per operator type, one thread."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(onnx_bytes, 1, tmp)
        for _ in range(calls):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    spent: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            spent[event["args"]["op_name"]] += event["dur"]
    total = sum(spent.values())
    return {op: round(us / total, 4) for op, us in spent.most_common()}


def tree_kernel_variants(onnx_bytes: bytes, feeds: dict, rows: int, rounds: int,
                         chunk: int = 50) -> dict[str, float]:
    """Microseconds per row of the graph's ``TreeEnsembleClassifier`` alone (1 thread) on the
    matrix the graph gives it: as exported, its trees in nodes of ``chunk``, as a regressor, and
    as exported on blocks of ``chunk`` and 200 rows."""
    import onnx
    from onnx import helper

    graph = onnx.load_from_string(onnx_bytes)
    tree = next(n for n in graph.graph.node if n.op_type == "TreeEnsembleClassifier")
    graph.graph.output.append(helper.make_tensor_value_info(tree.input[0], onnx.TensorProto.FLOAT,
                                                            None))
    matrix = session(graph.SerializeToString(), 1).run([tree.input[0]], feeds)[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in tree.attribute}
    width = matrix.shape[1]

    def model(nodes: list, outputs: list) -> bytes:
        g = helper.make_graph(nodes, "trees", [helper.make_tensor_value_info(
            "x", onnx.TensorProto.FLOAT, [None, width])], outputs)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15),
                                                   helper.make_opsetid("ai.onnx.ml", 1)],
                                 ir_version=8).SerializeToString()

    def classifier(trees: range, k: int):
        keep = [i for i, t in enumerate(attrs["nodes_treeids"]) if t in trees]
        leaves = [i for i, t in enumerate(attrs["class_treeids"]) if t in trees]
        kw = {key: ([v[i] for i in keep] if key.startswith("nodes_") else
                    [v[i] for i in leaves] if key.startswith("class_") else v)
              for key, v in attrs.items()}
        return helper.make_node("TreeEnsembleClassifier", ["x"], [f"label{k}", f"prob{k}"],
                                domain="ai.onnx.ml", **kw)

    n_trees = max(attrs["nodes_treeids"]) + 1
    chunks = [range(lo, min(lo + chunk, n_trees)) for lo in range(0, n_trees, chunk)]
    split = [classifier(r, k) for k, r in enumerate(chunks)]
    outputs = [helper.make_tensor_value_info(f"{kind}{k}", t, None) for k in range(len(chunks))
               for kind, t in (("label", onnx.TensorProto.INT64), ("prob", onnx.TensorProto.FLOAT))]
    regressor = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["margin"], domain="ai.onnx.ml", n_targets=1,
        target_ids=attrs["class_ids"], target_nodeids=attrs["class_nodeids"],
        target_treeids=attrs["class_treeids"], target_weights=attrs["class_weights"],
        **{key: v for key, v in attrs.items() if key.startswith("nodes_")})
    sessions = {
        "as_exported": session(model([classifier(range(n_trees), 0)], outputs[:2]), 1),
        f"in_nodes_of_{chunk}_trees": session(model(split, outputs), 1),
        "as_regressor_margin": session(model([regressor], [helper.make_tensor_value_info(
            "margin", onnx.TensorProto.FLOAT, None)]), 1),
    }
    candidates = {name: (lambda s=s: s.run(None, {"x": matrix})) for name, s in sessions.items()}
    exported = sessions["as_exported"]

    def in_row_blocks(size: int):  # ONNX Runtime walks all trees per row: blocks keep a tree hot
        return lambda: [exported.run(None, {"x": matrix[lo:lo + size]})
                        for lo in range(0, len(matrix), size)]

    for size in (chunk, 200):
        candidates[f"as_exported_in_row_blocks_of_{size}"] = in_row_blocks(size)
    return interleaved(candidates, rows, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-estimators", type=int, default=300)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from raylane.config import load_config
    from raylane.model.families import get_family
    from raylane.model.metrics import METRICS
    from raylane.model.onnx_model import OnnxModel
    from raylane.release.export import check_parity, to_onnx
    from raylane.training.fit import fit_model
    from raylane.training.job import load_data

    os.chdir(ROOT)
    config = load_config(ROOT / "tune_configs" / "credit_xgboost.yaml", [])
    data = load_data(config)[1]
    params = {"tree_method": "hist", "n_jobs": 1, "n_estimators": args.n_estimators,
              "max_depth": 6, "learning_rate": 0.05}
    pipeline = fit_model(data, get_family("xgboost"), params, METRICS["roc_auc"], 0).pipeline
    onnx_bytes = to_onnx(pipeline, data.schema)
    model = OnnxModel(onnx_bytes, data.schema)
    parity = check_parity(pipeline, model, data.holdout.X)
    batch = data.holdout.X.sample(args.rows, replace=True, random_state=0)
    prepared = pipeline[:-1].transform(batch)
    booster = pipeline.steps[-1][1]
    feeds = model.feeds_from_frame(batch)

    report = {"rows": args.rows, "n_estimators": args.n_estimators, "max_depth": 6,
              "onnxruntime": ort.__version__, "parity_passed": parity.passed,
              "load_average_start": os.getloadavg()[0]}
    for threads in (1, 2):
        booster.set_params(n_jobs=threads)
        sess = session(onnx_bytes, threads)
        threaded = OnnxModel(onnx_bytes, data.schema, intra_op_threads=threads)
        us = interleaved({
            "native_booster": lambda: booster.predict_proba(prepared),
            "onnx_session": lambda s=sess: s.run(None, feeds),
            "native_pipeline": lambda: pipeline.predict_proba(batch),
            "onnx_predict_frame": lambda m=threaded: m.predict_frame(batch),
        }, args.rows, args.rounds)
        us["onnx_vs_native"] = us["native_booster"] / us["onnx_session"]
        us["onnx_vs_native_from_raw_rows"] = us["native_pipeline"] / us["onnx_predict_frame"]
        report[f"{threads}_thread"] = us
        print(f"{threads} thread(s): " + ", ".join(f"{k} {v:.2f}" for k, v in us.items()),
              flush=True)
    report["operator_shares_1_thread"] = operator_shares(onnx_bytes, feeds)
    booster.set_params(n_jobs=1)
    kernels = tree_kernel_variants(onnx_bytes, feeds, args.rows, args.rounds)
    kernels["native_booster"] = interleaved(
        {"b": lambda: booster.predict_proba(prepared)}, args.rows, args.rounds)["b"]
    report["tree_node_alone_1_thread"] = kernels
    print("tree node alone, 1 thread: " + ", ".join(f"{k} {v:.2f}" for k, v in kernels.items()),
          flush=True)
    report["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
