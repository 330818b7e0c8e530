"""The JSON size bound (raylane/serving/limits.py): a body with more objects, arrays or values
than a request of ``max_rows`` rows can hold is refused before parsing; a body too short to hold
that many is let through without counting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raylane.model.feeds import RequestError
from raylane.serving.limits import check_json_size


def over_the_bounds(body: bytes, max_rows: int, width: int) -> bool:
    cells = (max_rows + 4) * (width + 1)
    return (body.count(b"{") + body.count(b"[") > 2 * cells + 256
            or body.count(b",") > 4 * cells + 256)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(body=st.lists(st.sampled_from([b"{", b"[", b",", b"}", b"1", b"{}," * 40, b"," * 90]),
                     max_size=60).map(b"".join),
       max_rows=st.integers(1, 3), width=st.integers(1, 3))
def test_refused_exactly_when_the_body_holds_more_than_the_bounds(body, max_rows, width):
    if over_the_bounds(body, max_rows, width):
        with pytest.raises(RequestError) as caught:
            check_json_size(body, max_rows, width)
        assert (caught.value.field, caught.value.reason) == ("body", "too_many_rows")
    else:
        check_json_size(body, max_rows, width)


@pytest.mark.parametrize("length, refused", [(276, False), (277, True)])
def test_the_first_body_long_enough_to_pass_the_bound_is_counted(length, refused):
    # one row of one column: at most 2 * (5 * 2) + 256 = 276 objects and arrays
    if refused:
        with pytest.raises(RequestError):
            check_json_size(b"[" * length, 1, 1)
    else:
        check_json_size(b"[" * length, 1, 1)
