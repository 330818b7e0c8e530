"""Fault: the prediction log cannot write (its directory is unwritable, or the disk is full).

Budget: zero failed requests; every sampled row that could not be written is counted in
``PredictionLog.dropped_rows`` and in ``raylane_prediction_log_dropped_rows_total``; no partial
file is left; once the disk has room again, new rows are written.

The real app (every route, the micro-batcher) over a real ONNX model, called in-process through
ASGI on the replica's own event loop; the replica is :class:`~raylane.serving.replica.Replica`
with its housekeeping (which reports the dropped rows). "Unwritable" is a regular file where the
directory should be (from the start, or replacing it while the replica serves) or a read-only
directory (mode bits; for root, the immutable attribute). "Full" is a local
directory behind pyarrow's ``PyFileSystem(FSSpecHandler(...))`` whose writes fail with ``ENOSPC``
after a few bytes (a tiny tmpfs needs root).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from tiny_serving_model import registered, tiny_onnx

from raylane.serving.api import bind, build_api
from raylane.serving.prediction_log import PredictionLog
from raylane.serving.protocols import PROTOCOLS
from raylane.serving.replica import Replica

URI = "models:/credit@champion"
ROWS = [{"age": 30.0, "income": 50.0, "home": "rent"}, {"age": None, "income": 9.0, "home": None}]
REQUESTS = 60
LOG = {"enabled": True, "sample_rate": 1.0, "flush_rows": 10**6, "flush_interval_s": 3600}


@pytest.fixture(scope="module")
def good() -> bytes:
    return tiny_onnx()


class FullFileSystem(LocalFileSystem):
    """A local filesystem whose disk is full while ``full`` is set: a write fails with ENOSPC
    after 64 bytes (the partial file stays on disk, as on a real full disk)."""

    full = True

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode=mode, **kwargs)
        if "w" in mode and self.full:
            real_write, written = f.write, [0]

            def write(data):
                if written[0] + len(data) > 64:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
                written[0] += len(data)
                return real_write(data)

            f.write = write
        return f


async def serve_traffic(replica: Replica) -> list[int]:
    """``REQUESTS`` predictions (native, V2 and MLflow routes, 8 at a time); their statuses."""
    api = build_api(PROTOCOLS)
    bind(api, replica.plane, PROTOCOLS)
    v2 = {"inputs": [{"name": c, "datatype": "BYTES" if c == "home" else "FP64", "shape": [2],
                      "data": [r[c] for r in ROWS]} for c in ("age", "income", "home")]}
    calls = [("/predict", {"records": ROWS}), ("/v2/models/credit/infer", v2),
             ("/invocations", {"dataframe_records": ROWS})]
    statuses: list[int] = []
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
        for start in range(0, REQUESTS, 8):
            batch = [calls[i % len(calls)] for i in range(start, min(start + 8, REQUESTS))]
            answers = await asyncio.gather(*(client.post(p, json=b) for p, b in batch))
            statuses += [r.status_code for r in answers]
    return statuses


async def until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def start_replica(good: bytes, directory: str) -> Replica:
    replica = Replica(fetch=lambda uri, tracking: registered("1", good),
                      resolve=lambda uri, tracking: "1")
    replica.housekeeping_period_s = 0.02
    counted: list[float] = []
    replica.telemetry.log_dropped.inc = lambda value=1.0, tags=None: counted.append(value)
    replica.counted = counted  # type: ignore[attr-defined]
    return replica


def config(directory: str) -> dict:
    return {"model_uri": URI, "poll_interval_s": 0, "prediction_log": {**LOG,
                                                                     "directory": directory}}


def run_unwritable(good: bytes, directory: str) -> tuple[list[int], int, float]:
    async def main():
        replica = start_replica(good, directory)
        await replica.reconfigure(config(directory))
        statuses = await serve_traffic(replica)
        plog = replica.plane.plog
        assert plog is not None and plog.buffered_rows == 2 * REQUESTS
        await asyncio.to_thread(plog.flush)  # the write fails: counted, not raised
        reported = await until(lambda: sum(replica.counted) >= plog.dropped_rows > 0)
        await replica.stop()
        assert reported, "housekeeping did not report the dropped rows"
        return statuses, plog.dropped_rows, sum(replica.counted)

    return asyncio.run(main())


def test_a_file_where_the_log_directory_should_be(good, tmp_path):
    blocker = tmp_path / "plog"
    blocker.write_text("not a directory")
    statuses, dropped, counted = run_unwritable(good, str(blocker / "predictions"))
    assert statuses == [200] * REQUESTS
    assert dropped == counted == 2 * REQUESTS
    assert blocker.read_text() == "not a directory"


def read_only(directory: Path) -> Callable[[], None]:
    """Make ``directory`` read-only for this process, whoever it runs as; return the undo.

    Mode bits do not stop root, the immutable attribute (``chattr +i``) does."""
    if os.geteuid() != 0:
        directory.chmod(stat.S_IRUSR | stat.S_IXUSR)
        return lambda: directory.chmod(stat.S_IRWXU)
    chattr = shutil.which("chattr")
    done = chattr and subprocess.run([chattr, "+i", str(directory)], capture_output=True)
    if not done or done.returncode != 0:
        pytest.skip(f"this filesystem has no immutable attribute (chattr +i {directory})")
    return lambda: subprocess.run([chattr, "-i", str(directory)], check=True)


def test_a_read_only_log_directory(good, tmp_path):
    directory = tmp_path / "plog"
    directory.mkdir()
    undo = read_only(directory)
    try:
        statuses, dropped, counted = run_unwritable(good, str(directory))
    finally:
        undo()
    assert statuses == [200] * REQUESTS
    assert dropped == counted == 2 * REQUESTS
    assert list(directory.iterdir()) == []


def test_a_log_directory_replaced_by_a_file_while_serving(good, tmp_path):
    """The directory existed (the log created it) and became a file: no write can succeed,
    root's included."""
    directory = tmp_path / "plog"

    async def main():
        replica = start_replica(good, str(directory))
        await replica.reconfigure(config(str(directory)))
        assert directory.is_dir()
        shutil.rmtree(directory)
        directory.write_text("not a directory")
        statuses = await serve_traffic(replica)
        plog = replica.plane.plog
        assert await asyncio.to_thread(plog.flush) == []
        reported = await until(lambda: sum(replica.counted) >= plog.dropped_rows > 0)
        await replica.stop()
        assert reported, "housekeeping did not report the dropped rows"
        return statuses, plog.dropped_rows, sum(replica.counted)

    statuses, dropped, counted = asyncio.run(main())
    assert statuses == [200] * REQUESTS
    assert dropped == counted == 2 * REQUESTS
    assert directory.read_text() == "not a directory"


def test_a_full_disk_drops_and_counts_rows_then_logging_resumes(good, tmp_path):
    directory = tmp_path / "plog"
    fs = FullFileSystem()

    async def main():
        replica = start_replica(good, str(directory))
        await replica.reconfigure(config(str(directory)))
        plog = replica.plane.plog = PredictionLog(
            directory=str(directory), filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)),
            sample_rate=1.0, flush_rows=10**6, flush_interval_s=3600)
        full = await serve_traffic(replica)
        assert await asyncio.to_thread(plog.flush) == []  # ENOSPC: nothing written
        dropped = plog.dropped_rows
        reported = await until(lambda: sum(replica.counted) >= dropped > 0)
        leftover = sorted(p.name for p in directory.iterdir())
        fs.full = False  # space is freed
        freed = await serve_traffic(replica)
        written = await asyncio.to_thread(plog.flush)
        await replica.stop()
        assert reported, "housekeeping did not report the dropped rows"
        return full, freed, dropped, sum(replica.counted), leftover, written, plog.dropped_rows

    full, freed, dropped, counted, leftover, written, dropped_after = asyncio.run(main())
    assert full == freed == [200] * REQUESTS
    assert dropped == counted == 2 * REQUESTS
    assert leftover == []  # the partial .tmp file was removed
    assert dropped_after == dropped  # the rows after the disk recovered were all written
    assert len(written) == 1
    assert pq.read_table(written[0]).num_rows == 2 * REQUESTS
