"""S3 backup storage through a real agent and an S3-compatible server (a fixture):
multipart registration, ranged downloads into a cache, uploads, deletes, sha256 checked."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import raw_lun, reads_as_raw
from tests.support.agents import Agent, start_test_agent
from tests.support.fileserver import FileServer
from tests.support.s3server import S3Server


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = start_test_agent(tmp_path / "agent")
    yield agent
    agent.proc.stop()


def big_image(directory: Path) -> tuple[Path, str]:
    """20 MiB of raw image with data in it: three 8 MiB parts each way."""
    path = directory / "big.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), "20M"], check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x21 9M 2M", str(path)],
                   check=True, capture_output=True)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_register_download_upload_delete(s3: S3Server, agent: Agent, tmp_path: Path,
                                         file_server: FileServer, image_dir: Path) -> None:
    state, prepared = agent.call("s3_prepare", {"endpoint": s3.endpoint()})
    assert state == "succeeded", prepared

    image, sha = big_image(image_dir)
    state, facts = agent.call("s3_register", {
        "endpoint": s3.endpoint(), "url": file_server.url(image.name),
        "key": "strata/images/img-1", "expected_sha256": sha, "expected_format": "raw"})
    assert state == "succeeded", facts
    head = s3.client().head_object(Bucket=s3.bucket, Key="strata/images/img-1")
    assert head["ContentLength"] == 20 << 20 and head["Metadata"]["sha256"] == sha
    assert os.listdir(tmp_path / "agent" / "staging") == []

    state, again = agent.call("s3_register", {
        "endpoint": s3.endpoint(), "url": file_server.url(image.name),
        "key": "strata/images/img-1"})
    assert state == "failed" and again["code"] == "conflict", "never overwritten"

    state, copied = agent.call("s3_download", {
        "endpoint": s3.endpoint(), "key": "strata/images/img-1",
        "dest_dir": str(tmp_path / "cache"), "file_name": "img-1", "expected_sha256": sha,
        "expected_format": "raw"})
    assert state == "succeeded", copied
    assert (tmp_path / "cache" / "img-1").read_bytes() == image.read_bytes()

    state, err = agent.call("s3_download", {
        "endpoint": s3.endpoint(), "key": "strata/images/img-1",
        "dest_dir": str(tmp_path / "cache2"), "file_name": "img-1",
        "expected_sha256": "0" * 64, "expected_format": "raw"})
    assert state == "failed" and err["code"] == "checksum_mismatch"

    state, up = agent.call("s3_upload", {"endpoint": s3.endpoint(), "local_path": str(image),
                                         "key": "strata/volumes/vol-1"})
    assert state == "succeeded" and up["sha256"] == sha and up["size"] == 20 << 20
    body = s3.client().get_object(Bucket=s3.bucket, Key="strata/volumes/vol-1")["Body"].read()
    assert body == image.read_bytes()

    for expected in (True, False):
        state, gone = agent.call("s3_delete", {"endpoint": s3.endpoint(),
                                               "key": "strata/volumes/vol-1"})
        assert state == "succeeded" and gone["existed"] is expected

    # A raw LUN snapshot goes up as one qcow2 object of what it holds.
    lun = raw_lun(tmp_path, "lun-snapshot.raw")
    state, up = agent.call("s3_upload", {"endpoint": s3.endpoint(), "local_path": str(lun),
                                         "flatten": True, "src_format": "raw",
                                         "key": "strata/snapshots/lun-1"})
    assert state == "succeeded", up
    stored = tmp_path / "lun-1.qcow2"
    stored.write_bytes(s3.client().get_object(
        Bucket=s3.bucket, Key="strata/snapshots/lun-1")["Body"].read())
    assert up["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert reads_as_raw(stored, lun)
    assert os.listdir(tmp_path / "agent" / "staging") == []


def test_missing_bucket_and_server(s3: S3Server, agent: Agent) -> None:
    state, err = agent.call("s3_prepare", {"endpoint": s3.endpoint(bucket="no-such-bucket")})
    assert state == "failed" and err["code"] == "not_found" and "no-such-bucket" in err["message"]
    state, err = agent.call("s3_prepare", {"endpoint": s3.endpoint(
        endpoint_url="http://127.0.0.1:1")})
    assert state == "failed" and err["code"] == "s3_unreachable"
