"""SFTP backup storage through a real agent and a real OpenSSH server (a fixture):
register, download into a cache, upload, delete; sha256 checked end to end; a changed
host key or an unknown client key refused."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_image, raw_lun, reads_as_raw
from tests.support.agents import Agent, start_test_agent
from tests.support.fileserver import FileServer
from tests.support.sshd import SshServer, keypair


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = start_test_agent(tmp_path / "agent")
    yield agent
    agent.proc.stop()


def test_register_download_upload_delete(sshd: SshServer, agent: Agent, tmp_path: Path,
                                         file_server: FileServer, image_dir: Path) -> None:
    store = tmp_path / "store"
    state, prepared = agent.call("sftp_prepare", {"endpoint": sshd.endpoint(),
                                                  "path": str(store), "subdirs": ["images"]})
    assert state == "succeeded", prepared
    assert (store / "images").is_dir() and prepared["capacity"]["total"] > 0

    image, sha = make_image(image_dir, "base.qcow2")
    state, facts = agent.call("sftp_register", {
        "endpoint": sshd.endpoint(), "url": file_server.url(image.name),
        "remote_dir": str(store / "images"), "file_name": "img-1", "expected_sha256": sha,
        "expected_format": "qcow2"})
    assert state == "succeeded", facts
    assert facts["path"] == str(store / "images" / "img-1") and facts["sha256"] == sha
    assert (store / "images" / "img-1").read_bytes() == image.read_bytes()
    assert os.listdir(tmp_path / "agent" / "staging") == [], "no local copy left behind"

    assert facts["manifest"] == {"chunk_size": 64 << 20, "chunks": [sha]}  # one chunk

    cache = tmp_path / "cache"
    state, copied = agent.call("sftp_download", {
        "endpoint": sshd.endpoint(), "remote_path": facts["path"], "dest_dir": str(cache),
        "file_name": "img-1", "expected_sha256": sha, "expected_format": "qcow2",
        "manifest": facts["manifest"]})
    assert state == "succeeded", copied
    assert (cache / "img-1").read_bytes() == image.read_bytes()

    volume, _ = make_image(tmp_path, "data.qcow2", size="8M")
    state, up = agent.call("sftp_upload", {
        "endpoint": sshd.endpoint(), "local_path": str(volume),
        "remote_dir": str(store / "images"), "file_name": "vol-backup-1"})
    assert state == "succeeded", up
    assert up["sha256"] == hashlib.sha256(volume.read_bytes()).hexdigest()
    assert up["manifest"] == {"chunk_size": 64 << 20, "chunks": [up["sha256"]]}
    assert (store / "images" / "vol-backup-1").read_bytes() == volume.read_bytes()
    state, again = agent.call("sftp_upload", {
        "endpoint": sshd.endpoint(), "local_path": str(volume),
        "remote_dir": str(store / "images"), "file_name": "vol-backup-1"})
    assert state == "failed" and again["code"] == "conflict", "never overwritten"

    # A raw LUN snapshot goes up as one qcow2 file of what it holds.
    lun = raw_lun(tmp_path, "lun-snapshot.raw")
    state, up = agent.call("sftp_upload", {
        "endpoint": sshd.endpoint(), "local_path": str(lun), "flatten": True,
        "src_format": "raw", "remote_dir": str(store / "images"), "file_name": "lun-1"})
    assert state == "succeeded", up
    assert up["sha256"] == hashlib.sha256((store / "images" / "lun-1").read_bytes()).hexdigest()
    assert reads_as_raw(store / "images" / "lun-1", lun)
    assert os.listdir(tmp_path / "agent" / "staging") == []
    (store / "images" / "lun-1").unlink()

    for expected in (True, False):
        state, gone = agent.call("sftp_delete", {
            "endpoint": sshd.endpoint(), "remote_dir": str(store / "images"),
            "file_name": "vol-backup-1"})
        assert state == "succeeded" and gone["existed"] is expected
    assert sorted(os.listdir(store / "images")) == ["img-1"]


def test_bad_checksum_and_corruption_leave_nothing(sshd: SshServer, agent: Agent,
                                                   tmp_path: Path, file_server: FileServer,
                                                   image_dir: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    image, sha = make_image(image_dir, "base.qcow2")
    state, err = agent.call("sftp_register", {
        "endpoint": sshd.endpoint(), "url": file_server.url(image.name),
        "remote_dir": str(store), "file_name": "img-2", "expected_sha256": "0" * 64})
    assert state == "failed" and err["code"] == "checksum_mismatch"
    assert os.listdir(store) == [] and os.listdir(tmp_path / "agent" / "staging") == []

    (store / "img-3").write_bytes(image.read_bytes()[:-1] + b"x")  # corrupted at rest
    state, err = agent.call("sftp_download", {
        "endpoint": sshd.endpoint(), "remote_path": str(store / "img-3"),
        "dest_dir": str(tmp_path / "cache"), "file_name": "img-3", "expected_sha256": sha,
        "expected_format": "qcow2"})
    assert state == "failed" and err["code"] == "checksum_mismatch"
    assert os.listdir(tmp_path / "cache") == []
    state, err = agent.call("sftp_download", {
        "endpoint": sshd.endpoint(), "remote_path": str(store / "img-3"),
        "dest_dir": str(tmp_path / "cache"), "file_name": "img-3", "expected_sha256": sha,
        "expected_format": "qcow2", "manifest": {"chunk_size": 64 << 20, "chunks": [sha]}})
    assert state == "failed" and err["code"] == "checksum_mismatch"
    assert "chunk 0 (from byte 0)" in err["message"], err
    assert os.listdir(tmp_path / "cache") == []


def test_host_key_is_pinned_and_client_key_checked(sshd: SshServer, agent: Agent,
                                                   tmp_path: Path) -> None:
    _, other_host_key = keypair(tmp_path / "impostor")
    state, err = agent.call("sftp_prepare", {
        "endpoint": sshd.endpoint(host_key=other_host_key), "path": str(tmp_path / "s")})
    assert state == "failed" and err["code"] == "host_key_mismatch"
    assert not (tmp_path / "s").exists()
    stranger, _ = keypair(tmp_path / "stranger")
    state, err = agent.call("sftp_prepare", {
        "endpoint": sshd.endpoint(private_key=stranger), "path": str(tmp_path / "s")})
    assert state == "failed" and err["code"] == "sftp_auth_failed"
    state, err = agent.call("sftp_prepare", {
        "endpoint": sshd.endpoint(port=1), "path": str(tmp_path / "s")})
    assert state == "failed" and err["code"] == "sftp_unreachable"
    state, err = agent.call("sftp_prepare", {
        "endpoint": sshd.endpoint(private_key="not a key"), "path": str(tmp_path / "s")})
    assert state == "failed" and err["code"] == "invalid_credentials"
