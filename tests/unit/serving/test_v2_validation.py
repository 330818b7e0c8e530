"""V2 inference requests checked before anything runs: every malformed tensor is a 400 naming the
field (never the 500 "model_failure" these bodies got when the parser tripped over them), and
well-formed ones in every allowed spelling still predict. The real app, in-process."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_serving_model import loaded

from raylane.model.feeds import RequestError
from raylane.serving.protocols import v2
from raylane.serving.protocols.v2_tensors import V2_DATATYPES, _checked_tensor, check_tensor

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


_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=2), st.none(),
                                                             max_size=1),
)
_TENSORS = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["age", "income"]), st.integers(), st.none())},
    optional={
        "datatype": st.one_of(st.sampled_from(sorted(V2_DATATYPES)), st.text(max_size=4),
                              st.integers()),
        "shape": st.one_of(st.lists(st.one_of(st.integers(-1, 7), st.booleans(), st.floats()),
                                    max_size=3), st.integers()),
        "data": st.one_of(st.lists(_VALUES, max_size=7), st.lists(st.lists(_VALUES, max_size=3),
                                                                  max_size=3), _VALUES),
        "parameters": st.one_of(st.none(), st.dictionaries(st.text(max_size=3), _VALUES,
                                                           max_size=2), st.integers()),
    },
)

# flat columns at the quick path's edges: right and wrong lengths, types, names and parameters
_OF_TYPE = {"BOOL": st.booleans(), "BYTES": st.one_of(st.text(max_size=2), st.integers(0, 9)),
            "FP16": st.floats(), "FP32": st.floats(), "FP64": st.floats(allow_nan=False)}


def _flat(datatype: str):
    kind = _OF_TYPE.get(datatype, st.one_of(st.integers(-300, 300), st.integers(-(2**65), 2**65),
                                            st.floats(-300, 300).map(round)))
    return st.builds(
        lambda name, data, extra, parameters: {
            "name": name, "datatype": datatype, "data": data,
            # a bool is no dimension, though True == 1
            "shape": [len(data) == 1] if extra is None else [len(data) + extra],
            **({} if parameters == "absent" else {"parameters": parameters})},
        st.sampled_from(["age", "income", "age", 7, None]),
        st.lists(st.one_of(kind, kind, kind, st.none(), _VALUES), max_size=MAX_ROWS + 1),
        st.sampled_from([0, 0, 0, 0, 1, -1, None]),
        st.sampled_from(["absent"] * 4 + [None, {}, {"binary_data_size": 4}, 3]),
    )


_FLAT = st.sampled_from(sorted(V2_DATATYPES)).flatmap(_flat)


def _outcome(check, tensor):
    try:
        return check(tensor, 0, MAX_ROWS, 3)
    except RequestError as exc:
        return ("refused", str(exc), exc.field, exc.reason)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(tensor=st.one_of(_FLAT, _TENSORS, _VALUES))
def test_the_quick_path_for_flat_columns_agrees_with_every_check(tensor):
    """A flat column without parameters is checked in one go; any tensor gets the same answer
    (the same Tensor, or the same refusal) as through the step-by-step checks."""
    assert _outcome(check_tensor, tensor) == _outcome(_checked_tensor, tensor)
