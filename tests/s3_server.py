"""A local S3-compatible server for the lake-on-object-storage tests: moto's server mode
on a free loopback port, one per test session, never a cloud endpoint.

:func:`s3_env` is what an engine on that server needs in its environment (the standard
``AWS_*`` variables; delta-rs and :mod:`lake.storage` read them)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from uns.mqtt.mosquitto import free_port

__all__ = ["S3Server", "running_s3"]

KEY_ID = "uns-test-key"
SECRET = "uns-test-secret"  # moto takes any credentials; these never leave loopback


class S3Server:
    """A running moto server: its endpoint, and new buckets on it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def new_bucket(self, *, object_lock: bool = False) -> str:
        """A fresh, empty bucket (its name); with ``object_lock`` it is made with Object Lock on."""
        import boto3  # noqa: PLC0415 - moto's own dependency, loaded only with the server

        name = f"lake-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        import boto3  # noqa: PLC0415

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY_ID,
                            aws_secret_access_key=SECRET, region_name="us-east-1")  # fmt: skip


@contextlib.contextmanager
def running_s3(timeout_s: float = 30.0) -> Iterator[S3Server]:
    """moto's S3 server on ``127.0.0.1:<free port>`` until the block ends.

    In a process of its own (``moto.server``), not a thread of the test's: some deltalake
    calls hold the GIL while they wait for the store, and a server thread of the same
    process could then never answer them."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's S3 server did not start on port {port}")
            time.sleep(0.1)
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:  # it keeps nothing worth a graceful stop: the buckets die with the session
        proc.kill()
        proc.wait()
