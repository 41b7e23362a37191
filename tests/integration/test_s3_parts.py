"""S3 transfers of several parts against the S3-compatible server, and through a loopback
proxy that cuts connections: a failed part aborts its upload, leaving nothing behind,
and a ranged download survives a cut by retrying that part alone."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig
from agent.files import FileStores
from agent.s3.store import S3Store, make_client
from shared.errors import OperationFailed
from shared.protocol.s3 import S3Endpoint
from tests.support.agents import Agent, start_test_agent
from tests.support.s3server import S3Server
from tests.support.tcpproxy import TcpProxy

PART = 5 << 20


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = start_test_agent(tmp_path / "agent", {"s3_part_size": PART})
    yield agent
    agent.proc.stop()


@pytest.fixture
def proxy(s3: S3Server) -> Iterator[TcpProxy]:
    proxy = TcpProxy(s3.port)
    yield proxy
    proxy.close()


def image(directory: Path) -> tuple[Path, bytes, str]:
    """17 MiB of raw image, every MiB different: three whole parts and a short one."""
    data = b"".join(i.to_bytes(4, "big") * (1 << 18) for i in range(17))
    path = directory / "disk.raw"
    path.write_bytes(data)
    return path, data, hashlib.sha256(data).hexdigest()


def test_the_part_size_is_at_least_s3s_minimum() -> None:
    with pytest.raises(ValidationError):
        AgentConfig(s3_part_size=(5 << 20) - 1)


def test_multipart_upload_and_ranged_download(s3: S3Server, agent: Agent,
                                              tmp_path: Path) -> None:
    path, data, sha = image(tmp_path)
    state, up = agent.call("s3_upload", {"endpoint": s3.endpoint(), "local_path": str(path),
                                         "key": "strata/volumes/vol-1"})
    assert state == "succeeded" and up["sha256"] == sha and up["size"] == len(data), up
    obj = s3.client().get_object(Bucket=s3.bucket, Key="strata/volumes/vol-1")
    assert obj["ETag"].strip('"').endswith("-4"), "uploaded as four parts"
    assert obj["Body"].read() == data and obj["Metadata"]["sha256"] == sha

    state, facts = agent.call("s3_download", {
        "endpoint": s3.endpoint(), "key": "strata/volumes/vol-1",
        "dest_dir": str(tmp_path / "cache"), "file_name": "img-1", "expected_sha256": sha,
        "expected_format": "raw"})
    assert state == "succeeded", facts
    assert (tmp_path / "cache" / "img-1").read_bytes() == data


async def test_a_failed_part_aborts_the_upload(s3: S3Server, proxy: TcpProxy,
                                               tmp_path: Path) -> None:
    path, _, _ = image(tmp_path)
    store = S3Store(S3Endpoint.model_validate(s3.endpoint(endpoint_url=proxy.url)),
                    part_size=PART, client_factory=make_client)
    files = FileStores(nfs_timeout=10)

    def after_the_first_part(pct: float) -> None:
        """Every connection that then carries a part (a retry too) is cut in its middle;
        small requests, such as the abort, still pass."""
        proxy.cut_after(1 << 20, "up", times=100)

    try:
        with pytest.raises(OperationFailed):
            await store.upload(files, str(path), "strata/volumes/vol-cut",
                               after_the_first_part)
    finally:
        files.close()
    assert proxy.cuts >= 1
    client = s3.client()
    assert client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=s3.bucket).get("KeyCount") == 0


def test_a_ranged_download_survives_a_cut_connection(s3: S3Server, proxy: TcpProxy,
                                                     agent: Agent, tmp_path: Path) -> None:
    _, data, sha = image(tmp_path)
    s3.client().put_object(Bucket=s3.bucket, Key="strata/images/img-1", Body=data,
                           Metadata={"sha256": sha})
    proxy.cut_after(2 << 20, "down")
    state, facts = agent.call("s3_download", {
        "endpoint": s3.endpoint(endpoint_url=proxy.url), "key": "strata/images/img-1",
        "dest_dir": str(tmp_path / "cache"), "file_name": "img-1", "expected_sha256": sha,
        "expected_format": "raw"})
    assert state == "succeeded", facts
    assert proxy.cuts == 1
    assert (tmp_path / "cache" / "img-1").read_bytes() == data
