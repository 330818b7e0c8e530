"""The micro-batcher (max batch size, waiting, ordering, errors per item) and batch splitting."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pandas as pd
import pytest
from tiny_serving_model import ROWS, loaded

from raylane.serving.batcher import MicroBatcher
from raylane.serving.dataplane import DataPlane, predict_batch
from raylane.serving.holder import ModelHolder
from raylane.serving.settings import ServingSettings
from raylane.serving.telemetry import ServingTelemetry


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if any(i < 0 for i in items):
            raise ValueError(f"negative item in {items}")
        return [10 * i for i in items]


def test_batches_are_at_most_max_batch_size_and_results_keep_submission_order():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=2)
        return await asyncio.gather(*(b.submit(i) for i in range(5)))

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    assert fn.batches == [[0, 1], [2, 3], [4]]


def test_a_partial_batch_waits_for_more_items_and_a_full_one_does_not():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=3, wait_timeout_s=0.5)
        started = time.monotonic()
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0)  # the worker is now waiting for the batch to fill
        await asyncio.sleep(0)
        second = asyncio.ensure_future(b.submit(2))
        assert await asyncio.gather(first, second) == [10, 20]
        waited = time.monotonic() - started
        b.set_batch_wait_timeout_s(30.0)
        b.set_max_batch_size(2)
        started = time.monotonic()
        assert await asyncio.gather(b.submit(3), b.submit(4)) == [30, 40]
        return waited, time.monotonic() - started

    waited, full = asyncio.run(main())
    assert fn.batches == [[1, 2], [3, 4]]  # the late item joined the waiting batch
    assert waited >= 0.5 and full < 30.0  # a full batch runs without the 30 s wait


def test_an_error_in_a_batch_fails_only_the_item_that_fails_alone():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=3)
        out = await asyncio.gather(*(b.submit(i) for i in (1, -1, 3, -2)),
                                   return_exceptions=True)
        return out, await b.submit(4)

    (a, bad, c, bad2), after = asyncio.run(main())
    assert a == 10 and c == 30 and after == 40
    # each failing item gets the error of its own call, not the batch's
    assert isinstance(bad, ValueError) and str(bad) == "negative item in [-1]"
    assert isinstance(bad2, ValueError) and str(bad2) == "negative item in [-2]"
    assert fn.batches == [[1, -1, 3], [1], [-1], [3], [-2], [4]]


def test_a_cancelled_request_does_not_disturb_its_batch():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=4)
        gone = asyncio.ensure_future(b.submit(1))
        kept = asyncio.ensure_future(b.submit(2))
        await asyncio.sleep(0)
        gone.cancel()
        return await kept

    assert asyncio.run(main()) == 20
    assert fn.batches == [[1, 2]]


@pytest.fixture(scope="module")
def models():
    return loaded("1"), loaded("2")


def test_predict_batch_groups_by_model_and_splits_results_per_request(models):
    m1, m2 = models
    feeds = m1.onnx.feeds_from_frame(ROWS)
    rows = [slice(0, 3), slice(3, 4), slice(4, 8)]
    items = [(m, {k: v[s] for k, v in feeds.items()}, s.stop - s.start)
             for m, s in zip((m1, m2, m1), rows, strict=True)]
    out = predict_batch(items)
    for (model, part, n), pred in zip(items, out, strict=True):
        want = model.predict(part)
        assert pred.labels.shape == (n,) and pred.probabilities.shape == (n, 2)
        np.testing.assert_array_equal(pred.labels, want.labels)
        np.testing.assert_allclose(pred.probabilities, want.probabilities, rtol=1e-6)


def test_one_bad_request_among_concurrent_good_ones_fails_alone(models):
    """16 one-row requests batched into one ONNX call; one holds a string ONNX Runtime cannot
    encode (a lone surrogate): the 15 others get their own predictions, the bad one an error."""
    m1, _ = models
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    plane.configure(ServingSettings())
    calls: list[int] = []
    batch_fn = plane.batcher.fn
    plane.batcher.fn = lambda items: calls.append(len(items)) or batch_fn(items)
    feeds = m1.onnx.feeds_from_frame(pd.concat([ROWS, ROWS], ignore_index=True))
    rows = [{k: v[i:i + 1] for k, v in feeds.items()} for i in range(16)]
    rows[5] = {**rows[5], "home": np.array([["r\udc80nt"]], dtype=object)}

    async def main():
        return await asyncio.gather(*(plane.infer(m1, r, 1) for r in rows),
                                    return_exceptions=True)

    out = asyncio.run(main())
    assert calls[0] == 16  # they were batched together
    assert isinstance(out[5], UnicodeEncodeError)
    for i, pred in enumerate(out):
        if i != 5:
            want = m1.predict(rows[i])
            np.testing.assert_array_equal(pred.labels, want.labels)
            np.testing.assert_allclose(pred.probabilities, want.probabilities, rtol=1e-6)


def test_one_bad_http_request_among_16_concurrent_ones(models):
    """The newcomer's run of the issue: 16 concurrent /predict requests, one holding a string
    ONNX Runtime cannot take (a lone surrogate, JSON-escaped). The 15 good ones are answered
    with their predictions whatever happens to the bad one (400 if parsing refuses it, else
    500: never the others' failure)."""
    import httpx

    from raylane.serving.api import bind, build_api
    from raylane.serving.protocols import PROTOCOLS

    m1, _ = models
    plane = DataPlane(ModelHolder(), ServingTelemetry())
    # wait for the batch to fill: the 16 requests are scored as one batch
    plane.configure(ServingSettings.model_validate(
        {"batching": {"max_batch_size": 16, "batch_wait_timeout_s": 0.5}}))
    plane.holder.current = m1
    api = build_api(PROTOCOLS)
    bind(api, plane, PROTOCOLS)
    records = ROWS.to_dict("records") * 2
    bodies = [json.dumps({"records": [r]}).encode() for r in records]
    bodies[7] = b'{"records": [{"age": 1.0, "income": 2.0, "home": "r\\udc80nt"}]}'

    async def main():
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(*(
                client.post("/predict", content=b, headers={"content-type": "application/json"})
                for b in bodies))

    out = asyncio.run(main())
    assert out[7].status_code in (400, 500), out[7].text
    want = m1.onnx.predict_frame(pd.DataFrame(records))
    for i, r in enumerate(out):
        if i != 7:
            assert r.status_code == 200, (i, r.text)
            assert r.json()["predictions"] == [["bad", "good"][want.labels[i]]]
