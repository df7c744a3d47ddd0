"""A real S3 API on this machine for the store tests: moto's server on 127.0.0.1.

The tests reach it the way a deployment reaches its object store -- through s3fs, configured by
the standard ``AWS_*`` environment variables -- so they also hold for any Ray worker started
from the test process (workers inherit the environment).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import fsspec
import pytest

s3fs = pytest.importorskip("s3fs")
server = pytest.importorskip("moto.server")

ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3() -> Iterator[str]:
    """Start moto on a free loopback port, point ``AWS_*`` at it, create one bucket; yields
    ``s3://BUCKET``. s3fs keeps file-system objects per arguments, and the endpoint comes from
    the environment, so cached ones (of an earlier server) are dropped on the way in and out."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    moto = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    before = {k: os.environ.get(k) for k in (*ENV, "AWS_ENDPOINT_URL")}
    os.environ.update(ENV, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"slp-{uuid.uuid4().hex[:8]}"
    try:
        fsspec.filesystem("s3").mkdir(bucket)
        yield f"s3://{bucket}"
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        moto.stop()
