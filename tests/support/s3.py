"""A real S3-compatible server for tests: moto in server mode, a subprocess on a free port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs
from s3fs import S3FileSystem

from support.net import free_port, wait_http
from support.processes import stop_process

# moto accepts any credentials; these keep boto3/pyarrow from looking for real ones
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def moto_server(scratch: Path, bucket: str) -> Iterator[tuple[str, pafs.S3FileSystem]]:
    """A moto S3 server (its log in ``scratch``) with an empty ``bucket``: its endpoint URL and
    a pyarrow filesystem on it. Stopped when the context ends; fsspec's cached s3fs clients are
    dropped on entry and exit."""
    port = free_port()
    with open(scratch / "moto.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                 str(port)], stdout=log, stderr=subprocess.STDOUT)
        endpoint = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{endpoint}/moto-api/", timeout=60)
            fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http",
                                   region="us-east-1", access_key="testing",
                                   secret_key="testing", allow_bucket_creation=True)
            fs.create_dir(bucket)
            # fsspec keeps one s3fs instance per set of arguments, endpoint not among them
            # when it comes from AWS_ENDPOINT_URL: an earlier server's would be reused
            S3FileSystem.clear_instance_cache()
            yield endpoint, fs
        finally:
            S3FileSystem.clear_instance_cache()
            stop_process(proc)
