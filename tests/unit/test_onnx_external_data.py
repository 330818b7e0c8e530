"""A graph is refused if any tensor anywhere in it references external data (a file path)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data
from tiny_serving_model import tiny_onnx

from raylane.model.onnx_model import UnsafeModelError, check_self_contained


def external(name: str = "w") -> TensorProto:
    """A float tensor whose bytes ONNX Runtime would read from a file next to the model."""
    tensor = numpy_helper.from_array(np.zeros(2, dtype=np.float32), name)
    set_external_data(tensor, location="weights.bin", offset=0, length=8)
    tensor.ClearField("raw_data")
    return tensor


def sparse(values: TensorProto) -> onnx.SparseTensorProto:
    indices = numpy_helper.from_array(np.array([0, 1], dtype=np.int64), values.name + "_idx")
    return helper.make_sparse_tensor(values, indices, [4])


def identity_graph(name: str = "g", **extra) -> onnx.GraphProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    nodes = extra.pop("nodes", [helper.make_node("Identity", ["x"], ["y"])])
    return helper.make_graph(nodes, name, [x], [y], **extra)


def model(graph: onnx.GraphProto, training_info=(), **extra) -> bytes:
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **extra)
    proto.training_info.extend(training_info)
    return proto.SerializeToString()


def with_attr(attr: onnx.AttributeProto) -> bytes:
    node = helper.make_node("Identity", ["x"], ["y"])
    node.attribute.append(attr)
    return model(identity_graph(nodes=[node]))


def if_node(branch: onnx.GraphProto) -> onnx.NodeProto:
    return helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=identity_graph())


CASES = {
    "initializer": lambda: model(identity_graph(initializer=[external()])),
    "sparse_initializer": lambda: model(identity_graph(sparse_initializer=[sparse(external())])),
    "attribute t": lambda: with_attr(helper.make_attribute("value", external())),
    "attribute tensors": lambda: with_attr(helper.make_attribute("vs", [external()])),
    "attribute sparse_tensor": lambda: with_attr(
        helper.make_attribute("sv", sparse(external()))),
    "attribute sparse_tensors": lambda: with_attr(
        helper.make_attribute("svs", [sparse(external())])),
    "subgraph initializer": lambda: model(identity_graph(
        nodes=[if_node(identity_graph("b", initializer=[external()]))])),
    "subgraph sparse_initializer": lambda: model(identity_graph(
        nodes=[if_node(identity_graph("b", sparse_initializer=[sparse(external())]))])),
    "subgraph attribute tensors": lambda: model(identity_graph(nodes=[if_node(identity_graph(
        "b", nodes=[helper.make_node("Identity", ["x"], ["y"], vs=[external()])]))])),
    "attribute graphs": lambda: with_attr(helper.make_attribute(
        "gs", [identity_graph("b", sparse_initializer=[sparse(external())])])),
    "function node attribute": lambda: model(identity_graph(), functions=[helper.make_function(
        "custom", "f", ["x"], ["y"],
        [helper.make_node("Constant", [], ["y"], value=external())],
        [helper.make_opsetid("", 17)])]),
    "function default attribute": lambda: model(identity_graph(), functions=[
        helper.make_function("custom", "f", ["x"], ["y"],
                             [helper.make_node("Identity", ["x"], ["y"])],
                             [helper.make_opsetid("", 17)],
                             attribute_protos=[helper.make_attribute("w", external())])]),
    "training_info": lambda: model(identity_graph(), training_info=[onnx.TrainingInfoProto(
        initialization=identity_graph("init", initializer=[external()]))]),
}


@pytest.mark.parametrize("where", list(CASES))
def test_external_data_anywhere_in_the_model_is_refused(where):
    data = CASES[where]()
    with pytest.raises(UnsafeModelError, match="external data"):
        check_self_contained(data)


def test_self_contained_graphs_still_load():
    check_self_contained(tiny_onnx())
    check_self_contained(model(identity_graph(sparse_initializer=[sparse(
        numpy_helper.from_array(np.ones(2, dtype=np.float32), "s"))])))
