"""One V2 input tensor checked before anything runs: its fields, shape, nesting and datatype.

A tensor is ``{"name", "datatype", "shape", "data", "parameters"?}``. Everything about it that
does not need the model's columns is checked here, cheaply and in this order, so a hostile tensor
costs little: ``parameters`` is an object; ``shape`` has one or two dimensions, the first at most
``max_rows`` and the second at most the model's feature count (the product is taken once, after
those bounds); ``data`` is flat with that many values, or nested exactly as ``shape`` says; every
value suits ``datatype`` (numbers for numeric types, integers within range for integer types,
booleans for BOOL, scalars for BYTES; ``null`` is a missing value everywhere).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

from raylane.model.feeds import RequestError

V2_INTEGERS = {
    "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1),
    "UINT64": (0, 2**64 - 1), "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1),
}
V2_FLOATS = {"FP16", "FP32", "FP64"}
V2_NUMERIC = {"BOOL"} | set(V2_INTEGERS) | V2_FLOATS
V2_DATATYPES = V2_NUMERIC | {"BYTES"}

_NONE = type(None)
# the Python types JSON values of each datatype may have (null: a missing value)
_ALLOWED: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool, _NONE}),
    "BYTES": frozenset({str, int, float, bool, _NONE}),  # numbers: integer-coded categories
    **{t: frozenset({int, float, _NONE}) for t in V2_INTEGERS},
    **{t: frozenset({int, float, _NONE}) for t in V2_FLOATS},
}
_EXPECTED = {"BOOL": "true, false or null", "BYTES": "a string, a number or null"}


class Tensor(NamedTuple):
    """A checked input: ``flat`` holds the values row-major, ``prod(shape)`` of them."""

    name: str
    datatype: str
    shape: list[int]
    flat: list


def check_parameters(value: Any, field: str) -> dict:
    """A ``parameters`` field: absent/null or a JSON object (else a 400 naming ``field``)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(
            f"{field}: expected an object (or null), got {_json_type(value)}", field=field,
            reason="wrong_type",
        )
    return value


def check_tensor(inp: Any, i: int, max_rows: int, width: int) -> Tensor:
    """Input ``i`` of a request, checked against the limits (``width``: the feature count)."""
    if type(inp) is dict and inp.get("parameters") is None:
        # What nearly every client sends, one column as a flat list, checked in one go; anything
        # else, valid or not, goes through each check in turn (_checked_tensor names the fault).
        name, datatype, shape, data = (
            inp.get("name"), inp.get("datatype"), inp.get("shape"), inp.get("data"))
        if (type(name) is str and type(datatype) is str and datatype in _ALLOWED
                and type(shape) is list and len(shape) == 1 and type(data) is list
                and type(shape[0]) is int and 0 <= shape[0] <= max_rows
                and len(data) == shape[0]):
            _check_values(data, datatype, name, f"inputs[{i}]")
            return Tensor(name, datatype, shape, data)
    return _checked_tensor(inp, i, max_rows, width)


def _checked_tensor(inp: Any, i: int, max_rows: int, width: int) -> Tensor:
    field = f"inputs[{i}]"
    if not isinstance(inp, dict):
        raise RequestError(f"{field}: expected an object", field=field, reason="wrong_type")
    for key in ("name", "datatype", "shape", "data"):
        if key not in inp:
            raise RequestError(
                f"{field}: missing '{key}' (each input needs name, datatype, shape and data)",
                field=f"{field}.{key}",
                reason="missing_field",
            )
    params = check_parameters(inp.get("parameters"), f"{field}.parameters")
    if params.get("binary_data_size") is not None:
        raise RequestError(
            f"{field}: binary tensor data is not supported; send JSON tensors "
            "(tritonclient: binary_data=False)",
            field=f"{field}.parameters.binary_data_size",
            reason="binary_tensor",
        )
    name, datatype, shape, data = inp["name"], inp["datatype"], inp["shape"], inp["data"]
    if not isinstance(name, str):
        raise RequestError(f"{field}.name: expected a string, got {_json_type(name)}",
                           field=f"{field}.name", reason="wrong_type")
    if not isinstance(datatype, str) or datatype not in V2_DATATYPES:
        raise RequestError(
            f"{field} {name!r}: datatype {datatype!r} is not one of {sorted(V2_DATATYPES)}",
            field=name,
            reason="wrong_type",
        )
    shape = _check_shape(shape, name, field, max_rows, width)
    if not isinstance(data, list):
        raise RequestError(
            f"{field} {name!r}: data must be a list (flat or nested, row-major), got "
            f"{_json_type(data)}",
            field=name,
            reason="wrong_type",
        )
    flat = _flatten(data, shape, name, field)
    _check_values(flat, datatype, name, field)
    return Tensor(name, datatype, shape, flat)


def _check_shape(shape: Any, name: str, field: str, max_rows: int, width: int) -> list[int]:
    if not (isinstance(shape, list) and 1 <= len(shape) <= 2
            and all(type(d) is int and d >= 0 for d in shape)):
        raise RequestError(
            f"{field} {name!r}: shape must be a list of one or two non-negative integers "
            f"([N] or [N, F]), got {_describe(shape)}",
            field=name,
            reason="wrong_shape",
        )
    if shape[0] > max_rows:
        raise RequestError(
            f"{field} {name!r}: {shape[0]} rows is over the limit of {max_rows} rows per "
            "request; split the batch",
            field=name,
            reason="too_many_rows",
        )
    if len(shape) == 2 and shape[1] > width:
        raise RequestError(
            f"{field} {name!r}: shape {shape} has {shape[1]} columns; the model has {width} "
            "features",
            field=name,
            reason="wrong_shape",
        )
    return shape


def _flatten(data: list, shape: list[int], name: str, field: str) -> list:
    """``data`` row-major: flat with ``prod(shape)`` values, or nested exactly as ``shape``."""
    size = math.prod(shape)  # bounded: shape[0] <= max_rows, shape[1] <= the feature count
    if len(shape) == 2 and data and type(data[0]) is list:
        rows, cols = shape
        if len(data) != rows or not all(type(r) is list and len(r) == cols for r in data):
            bad = next((j for j, r in enumerate(data) if type(r) is not list or len(r) != cols),
                       None)
            got = f"{len(data)} rows" if bad is None else f"{_describe(data[bad])} at data[{bad}]"
            raise RequestError(
                f"{field} {name!r}: data nested as shape {shape} needs {rows} lists of {cols} "
                f"values; got {got}",
                field=name,
                reason="wrong_shape",
            )
        data = list(itertools.chain.from_iterable(data))
    elif len(data) != size:
        raise RequestError(
            f"{field} {name!r}: shape {shape} needs {size} values, data has {len(data)}",
            field=name,
            reason="wrong_shape",
        )
    return data


def _check_values(flat: list, datatype: str, name: str, field: str) -> None:
    types = set(map(type, flat))
    allowed = _ALLOWED[datatype]
    if not types <= allowed:
        j = next(j for j, v in enumerate(flat) if type(v) not in allowed)
        v = flat[j]
        if type(v) is list:
            raise RequestError(
                f"{field} {name!r}: data is nested deeper than its shape allows: "
                f"{_describe(v)} at flat index {j}",
                field=name,
                reason="wrong_shape",
            )
        expected = _EXPECTED.get(datatype, "a number or null")
        raise RequestError(
            f"input {name!r}: datatype {datatype} expects {expected}, got {_describe(v)} "
            f"(value {j})",
            field=name,
            reason="wrong_type",
        )
    bounds = V2_INTEGERS.get(datatype)
    if bounds is not None and types - {_NONE}:
        _check_integers(flat, datatype, bounds, name, types)


def _check_integers(flat: list, datatype: str, bounds: tuple[int, int], name: str,
                    types: set[type]) -> None:
    lo, hi = bounds
    values = flat if _NONE not in types else [v for v in flat if v is not None]
    if float in types:
        for v in values:
            if type(v) is float and not (math.isfinite(v) and v.is_integer()):
                raise RequestError(
                    f"input {name!r}: datatype {datatype} expects integers or null, got "
                    f"{_describe(v)}",
                    field=name,
                    reason="wrong_type",
                )
    if min(values) < lo or max(values) > hi:
        v = next(v for v in values if not lo <= v <= hi)
        raise RequestError(
            f"input {name!r}: datatype {datatype} holds integers in [{lo}, {hi}], got "
            f"{_describe(v)}",
            field=name,
            reason="out_of_range",
        )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "an array", dict: "an object",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
