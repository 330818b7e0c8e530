"""V2 inference requests checked before anything runs: every malformed tensor is a 400 naming the
field (never the 500 "model_failure" these bodies got when the parser tripped over them), and
well-formed ones in every allowed spelling still predict. The real app, in-process."""

from __future__ import annotations

import pytest
from tiny_serving_model import loaded

from raylane.serving.protocols import v2
from raylane.serving.protocols.v2_tensors import check_tensor

from .inprocess import make_client, make_plane, post

INFER = "/v2/models/credit/infer"
MAX_ROWS = 5


@pytest.fixture(scope="module")
def client():
    with make_client(make_plane(loaded("1"), {"limits": {"max_rows": MAX_ROWS}})) as c:
        yield c


def tensors(age=None, **override):
    """The three inputs of the tiny model (one row); ``age`` replaces the first tensor."""
    inputs = [{"name": "age", "datatype": "FP64", "shape": [1], "data": [30.0]},
              {"name": "income", "datatype": "FP64", "shape": [1], "data": [50.0]},
              {"name": "home", "datatype": "BYTES", "shape": [1], "data": ["own"]}]
    if age is not None:
        inputs[0] = age
    return {"inputs": inputs, **override}


def age(datatype="INT64", shape=(1,), data=(30,), **extra):
    def as_json(v):
        return list(v) if isinstance(v, tuple) else v

    return {"name": "age", "datatype": datatype, "shape": as_json(shape), "data": as_json(data),
            **extra}


def assert_400(r, field, reason, fragment=""):
    assert r.status_code == 400, r.text
    out = r.json()
    assert (out["field"], out["reason"]) == (field, reason), out
    assert fragment in out["error"], out


# the bodies a fuzzer and a person sent a served champion, which it answered 500 model_failure
@pytest.mark.parametrize("body,field,reason,fragment", [
    ({"inputs": [{"name": "", "datatype": "", "shape": [], "data": [],
                  "parameters": [None, None]}]},
     "inputs[0].parameters", "wrong_type", "expected an object (or null), got an array"),
    (tensors(age(parameters=True)), "inputs[0].parameters", "wrong_type", "got a boolean"),
    ({"inputs": [{"name": "age", "shape": [2], "datatype": "INT64", "data": [[1], 2]}]},
     "age", "wrong_shape", "nested deeper than its shape allows"),
])
def test_the_bodies_that_were_500s_are_400s_naming_the_field(client, body, field, reason,
                                                              fragment):
    assert_400(post(client, INFER, body), field, reason, fragment)


@pytest.mark.parametrize("body,field,reason,fragment", [
    # parameters: the request's, a tensor's and a requested output's are objects
    (tensors(parameters=[1]), "parameters", "wrong_type", "got an array"),
    (tensors(parameters="pd"), "parameters", "wrong_type", "got a string"),
    (tensors(age(parameters=7)), "inputs[0].parameters", "wrong_type", "got a number"),
    (tensors(outputs=[{"name": "label", "parameters": False}]), "outputs[0].parameters",
     "wrong_type", "got a boolean"),
    (tensors(outputs=[{"name": 3}]), "outputs", "wrong_type", "names of"),
    (tensors(outputs=[{"name": "label"}] * 3), "outputs", "wrong_type", "at most 2"),
    # data nesting vs shape
    (tensors(age(shape=[2, 1], data=[[1], [2, 3]])), "age", "wrong_shape",
     "needs 2 lists of 1 values; got [2, 3] at data[1]"),
    (tensors(age(shape=[2, 1], data=[[1], 2])), "age", "wrong_shape", "at data[1]"),
    (tensors(age(shape=[2, 1], data=[[1]])), "age", "wrong_shape", "got 1 rows"),
    (tensors(age(shape=[1, 1], data=[[[1]]])), "age", "wrong_shape", "nested deeper"),
    (tensors(age(shape=[1], data=[[30]])), "age", "wrong_shape", "nested deeper"),
    (tensors(age(shape=[3], data=[1])), "age", "wrong_shape", "shape [3] needs 3 values"),
    (tensors(age(data="30")), "age", "wrong_type", "data must be a list"),
    # shape: one or two non-negative integers, bounded by max_rows and the feature count
    (tensors(age(shape=[1, 1, 1])), "age", "wrong_shape", "one or two non-negative integers"),
    (tensors(age(shape=[])), "age", "wrong_shape", "one or two"),
    (tensors(age(shape=[-1])), "age", "wrong_shape", "non-negative"),
    (tensors(age(shape=[True])), "age", "wrong_shape", "non-negative integers"),
    (tensors(age(shape=[1.0])), "age", "wrong_shape", "non-negative integers"),
    (tensors(age(shape="1")), "age", "wrong_shape", "got '1'"),
    (tensors(age(shape=[MAX_ROWS + 1])), "age", "too_many_rows", "over the limit of 5 rows"),
    (tensors(age(shape=[2**64 - 1, 2**64 - 1])), "age", "too_many_rows", "limit"),
    (tensors(age(shape=[1, 4])), "age", "wrong_shape", "the model has 3 features"),
    # datatype vs values
    (tensors(age(data=[1.5])), "age", "wrong_type", "INT64 expects integers"),
    (tensors(age(data=[float("nan")])), "age", "wrong_type", "INT64 expects integers"),
    (tensors(age(datatype="INT8", data=[300])), "age", "out_of_range", "[-128, 127]"),
    (tensors(age(datatype="UINT8", data=[-1.0])), "age", "out_of_range", "[0, 255]"),
    (tensors(age(datatype="INT64", data=[2**63])), "age", "out_of_range", "INT64"),
    (tensors(age(datatype="BOOL", data=[1])), "age", "wrong_type", "BOOL expects true"),
    (tensors(age(datatype="FP32", data=["30"])), "age", "wrong_type",
     "FP32 expects a number or null, got '30'"),
    (tensors(age(datatype="FP32", data=[True])), "age", "wrong_type", "got True"),
    (tensors(age(datatype="FP32", data=[{"v": 1}])), "age", "wrong_type", "got {'v': 1}"),
    ({"inputs": [*tensors()["inputs"][:2], {"name": "home", "datatype": "BYTES", "shape": [1],
                                           "data": [{"x": 1}]}]},
     "home", "wrong_type", "BYTES expects a string, a number or null"),
    (tensors(age(datatype=["INT64"])), "age", "wrong_type", "is not one of"),
    # the tensor's own fields
    ({"inputs": [{"name": 5, "datatype": "FP32", "shape": [1], "data": [1]}]},
     "inputs[0].name", "wrong_type", "expected a string, got a number"),
    ({"inputs": [{"name": "age", "shape": [1], "data": [1]}]}, "inputs[0].datatype",
     "missing_field", "missing 'datatype'"),
    ({"inputs": [7]}, "inputs[0]", "wrong_type", "expected an object"),
    ({"inputs": tensors()["inputs"] * 2}, "inputs", "too_many_columns",
     "6 tensors, but the model has 3 features"),
    ({"inputs": {"age": [1]}}, "inputs", "missing_field", "non-empty list"),
])
def test_malformed_tensors_are_400_naming_the_field(client, body, field, reason, fragment):
    assert_400(post(client, INFER, body), field, reason, fragment)


@pytest.mark.parametrize("first", [
    age(data=[30]),
    age(data=[30.0]),  # an integral float is an integer
    age(data=[None]),  # null: a missing value the graph imputes
    age(shape=[1, 1], data=[[30]]),
    age(shape=[1, 1], data=[30]),  # [N, 1] sent flat
    age(datatype="FP16", data=[30.5]),
    age(datatype="UINT8", data=[255]),
    age(datatype="BOOL", data=[True]),
])
def test_well_formed_tensors_predict(client, first):
    r = post(client, INFER, tensors(first, parameters={"content_type": "pd"},
                                    outputs=[{"name": "label", "parameters": {}}]))
    assert r.status_code == 200, r.text
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]


def test_a_shape_of_huge_dimensions_is_refused_without_multiplying_them():
    """20,000 dimensions of 2**64-1 (a 0.4 MB body): refused on the number of dimensions."""
    tensor = age(shape=[2**64 - 1] * 20_000, data=[])
    with pytest.raises(v2.RequestError) as err:
        check_tensor(tensor, 0, max_rows=10_000, width=3)
    assert (err.value.field, err.value.reason) == ("age", "wrong_shape")
