"""Ranged downloads retry one part at a time (a fake S3 client that drops connections)."""

from __future__ import annotations

import io
from typing import Any

import botocore.exceptions
import pytest

from agent.s3.store import S3Store
from shared.errors import OperationFailed
from shared.protocol.s3 import S3Endpoint

DATA = bytes(range(256)) * 100  # 25600 bytes
ENDPOINT = S3Endpoint(endpoint_url="http://s3.invalid", bucket="bkt", access_key="a",
                      secret_key="b")


class FlakyClient:
    def __init__(self, failures_per_part: int) -> None:
        self.failures_per_part = failures_per_part
        self.gets: list[str] = []
        self._failed: dict[str, int] = {}

    def head_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"ContentLength": len(DATA), "Metadata": {"sha256": "x"}}

    def get_object(self, Bucket: str, Key: str, Range: str) -> dict[str, Any]:
        self.gets.append(Range)
        if self._failed.get(Range, 0) < self.failures_per_part:
            self._failed[Range] = self._failed.get(Range, 0) + 1
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://s3.invalid")
        start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        return {"Body": io.BytesIO(DATA[start:end + 1])}


async def collect(store: S3Store) -> bytes:
    size, sha, chunks = await store.read_chunks("k")
    assert size == len(DATA) and sha == "x"
    return b"".join([c async for c in chunks])


async def test_each_part_is_retried_alone() -> None:
    client = FlakyClient(failures_per_part=2)
    store = S3Store(ENDPOINT, part_size=10000, client_factory=lambda e: client,
                    retry_delay=0.001)
    assert await collect(store) == DATA
    assert client.gets.count("bytes=0-9999") == 3
    assert client.gets.count("bytes=20000-25599") == 3
    assert len(client.gets) == 9, "three parts, each tried three times"


async def test_a_part_that_keeps_failing_fails_the_download() -> None:
    store = S3Store(ENDPOINT, part_size=10000,
                    client_factory=lambda e: FlakyClient(failures_per_part=99), retry_delay=0.001)
    with pytest.raises(OperationFailed) as info:
        await collect(store)
    assert info.value.code == "s3_unreachable" and "bytes 0-9999" in info.value.message
