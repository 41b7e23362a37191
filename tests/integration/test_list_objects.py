"""`list_objects` through a real agent: qemu-img made files in a local directory and on
nfs-ganesha through libnfs, an OpenSSH server (sftp_list) and moto's S3 server (s3_list).
What the reconcile work builds on: each object's path, kind, size on disk and virtual
size."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import Agent, start_test_agent
from tests.support.nfsserver import NfsServer
from tests.support.s3server import S3Server
from tests.support.sshd import SshServer

MiB = 1 << 20
TEMP = ".strata-tmp-t1~0123456789ab-vol-3.qcow2"
DIRS = [{"subdir": "volumes", "kind": "volume"}, {"subdir": "imagecache", "kind": "cache"},
        {"subdir": "snapshots", "kind": "snapshot"}]


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    agent = start_test_agent(tmp_path / "agent")
    yield agent
    agent.proc.stop()


def populate(root: Path) -> None:
    """A cache image, a linked clone of it with data, an empty volume, a half-written
    temporary, a directory and a symlink (neither is an object)."""
    (root / "volumes").mkdir(parents=True)
    (root / "imagecache").mkdir()
    cache = root / "imagecache" / "img-1"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(cache), "32M"], check=True)
    clone = root / "volumes" / "vol-1.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(cache), "-F", "raw",
                    str(clone), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 2M", str(clone)],
                   check=True, capture_output=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    str(root / "volumes" / "vol-2.qcow2"), "1G"], check=True)
    (root / "volumes" / TEMP).write_bytes(b"QFI\xfb half")
    (root / "volumes" / "subdir").mkdir()
    os.symlink("/etc/passwd", root / "volumes" / "link")


def by_path(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["path"]: o for o in objects}


def check_listing(root: Path, objects: list[dict[str, Any]]) -> None:
    found = by_path(objects)
    assert set(found) == {"volumes/vol-1.qcow2", "volumes/vol-2.qcow2", f"volumes/{TEMP}",
                          "imagecache/img-1"}
    clone = found["volumes/vol-1.qcow2"]
    assert (clone["kind"], clone["place"], clone["format"], clone["virtual_size"]) == \
        ("volume", "file", "qcow2", 64 * MiB)
    assert clone["size"] >= 2 * MiB, "the written clusters count"
    assert found["volumes/vol-2.qcow2"]["virtual_size"] == 1 << 30
    assert found["volumes/vol-2.qcow2"]["size"] < MiB, "an empty qcow2 takes little"
    cache = found["imagecache/img-1"]
    assert (cache["kind"], cache["format"], cache["virtual_size"]) == ("cache", "raw", 32 * MiB)
    assert cache["size"] == (root / "imagecache" / "img-1").stat().st_blocks * 512
    temp = found[f"volumes/{TEMP}"]
    assert (temp["kind"], temp["format"], temp["virtual_size"]) == ("temporary", None, None)


def test_a_local_directory(agent: Agent, tmp_path: Path) -> None:
    root = tmp_path / "primary"
    populate(root)
    state, listed = agent.call("list_objects", {"root": str(root), "dirs": DIRS})
    assert state == "succeeded", listed
    check_listing(root, listed["objects"])
    assert listed["capacity"]["total"] > 0

    state, err = agent.call("list_objects", {"root": str(root),
                                             "dirs": [{"subdir": "..", "kind": "volume"}]})
    assert state == "rejected" and err["code"] == "invalid_input"
    state, err = agent.call("list_objects", {"root": "relative", "dirs": DIRS})
    assert state == "rejected" and err["code"] == "invalid_input"


def test_an_nfs_export_through_libnfs(agent: Agent, nfs: NfsServer) -> None:
    share = nfs.share("listing")
    populate(share)
    state, listed = agent.call("list_objects", {"root": nfs.url(share), "dirs": DIRS})
    assert state == "succeeded", listed
    check_listing(share, listed["objects"])


def test_an_sftp_store(agent: Agent, sshd: SshServer, tmp_path: Path) -> None:
    store = tmp_path / "sftp-store"
    (store / "images").mkdir(parents=True)
    (store / "images" / "img-1").write_bytes(b"x" * 5000)
    (store / "images" / ".strata-tmp-0123456789ab-img-2").write_bytes(b"y" * 10)
    (store / "images" / "nested").mkdir()
    state, listed = agent.call("sftp_list", {
        "endpoint": sshd.endpoint(), "root": str(store),
        "dirs": [{"subdir": "images", "kind": "image"}, {"subdir": "missing", "kind": "image"}]})
    assert state == "succeeded", listed
    assert listed["objects"] == [
        {"path": "images/.strata-tmp-0123456789ab-img-2", "place": "file", "kind": "temporary",
         "size": 10, "virtual_size": None, "format": None},
        {"path": "images/img-1", "place": "file", "kind": "image", "size": 5000,
         "virtual_size": None, "format": None},
    ]
    assert listed["capacity"]["total"] > 0


def test_an_s3_bucket(agent: Agent, s3: S3Server) -> None:
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="strata/images/img-1", Body=b"a" * 3000)
    client.put_object(Bucket=s3.bucket, Key="strata/images/deeper/x", Body=b"b")
    client.put_object(Bucket=s3.bucket, Key="other/images/img-9", Body=b"c")
    client.create_multipart_upload(Bucket=s3.bucket, Key="strata/images/img-2")
    state, listed = agent.call("s3_list", {"endpoint": s3.endpoint(), "prefix": "strata/",
                                           "dirs": [{"subdir": "images", "kind": "image"}]})
    assert state == "succeeded", listed
    assert listed["capacity"] is None, "S3 reports no capacity"
    assert sorted((o["path"], o["place"], o["kind"], o["size"]) for o in listed["objects"]) == [
        ("images/img-1", "object", "image", 3000),
        ("images/img-2", "object", "temporary", 0),
    ]
    state, err = agent.call("s3_list", {"endpoint": s3.endpoint(), "prefix": "a b/",
                                        "dirs": [{"kind": "image"}]})
    assert state == "rejected" and err["code"] == "invalid_input"


def quarantined(agent: Agent, root: str, paths: list[str]) -> dict[str, Any]:
    state, result = agent.call("quarantine_objects", {"root": root, "paths": paths})
    assert state == "succeeded", result
    return result


def test_quarantine_moves_files_aside(agent: Agent, nfs: NfsServer, tmp_path: Path) -> None:
    """On a local directory and through libnfs: regular files move into
    `quarantine/<dir>/` with their bytes (a second file of the same name gets a suffix);
    a symlink, a directory and a missing file are left as they are."""
    local = tmp_path / "primary"
    share = nfs.share("quarantine")
    for root, url in ((local, str(local)), (share, nfs.url(share))):
        populate(root)
        result = quarantined(agent, url, ["volumes/vol-2.qcow2", f"volumes/{TEMP}",
                                          "volumes/link", "volumes/subdir", "volumes/gone"])
        assert result["moved"] == {"volumes/vol-2.qcow2": "quarantine/volumes/vol-2.qcow2",
                                   f"volumes/{TEMP}": f"quarantine/volumes/{TEMP}"}
        assert sorted(s["path"] for s in result["skipped"]) == [
            "volumes/gone", "volumes/link", "volumes/subdir"]
        assert (root / "volumes" / "link").is_symlink() and (root / "volumes" / "subdir").is_dir()
        assert (root / "quarantine" / "volumes" / TEMP).read_bytes() == b"QFI\xfb half"
        assert not (root / "volumes" / "vol-2.qcow2").exists()
        (root / "volumes" / "vol-2.qcow2").write_bytes(b"again")
        again = quarantined(agent, url, ["volumes/vol-2.qcow2"])
        assert again["moved"] == {"volumes/vol-2.qcow2": "quarantine/volumes/vol-2.qcow2.1"}
        assert (root / "quarantine" / "volumes" / "vol-2.qcow2.1").read_bytes() == b"again"

    state, err = agent.call("quarantine_objects", {"root": str(local),
                                                   "paths": ["volumes/../../etc"]})
    assert state == "rejected" and err["code"] == "invalid_input"
