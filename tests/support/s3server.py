"""An S3-compatible server on a loopback port: moto's server (PyPI; no S3 server is in
the OS package registry here), with one bucket."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import boto3

from tests.support.procs import free_port


class S3Server:
    bucket = "strata-images"

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the S3 server did not start") from None
                time.sleep(0.1)
        self.client().create_bucket(Bucket=self.bucket)

    def endpoint(self, **override: object) -> dict[str, object]:
        return {"endpoint_url": self.url, "bucket": self.bucket, "region": "us-east-1",
                "access_key": "strata-test", "secret_key": "strata-test-secret", **override}

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="strata-test",
                            aws_secret_access_key="strata-test-secret")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
