"""Snapshots of qcow2 volumes end to end, on local storage and on NFS (libnfs mode, the
only one this kernel can run; mount mode runs the same agent commands on a mounted
directory, as local storage does): a distinct byte pattern written with qemu-io before
each snapshot, and every pattern checked after reverts and after deleting snapshots in
the middle of the tree, with real qemu-img and qemu-io."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError
from controller.services.snapshots import MAX_CHAIN_DEPTH
from tests.conftest import Stack
from tests.integration.test_cli import strata
from tests.integration.test_nfs import chain, nfs_storage, register, volume
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.nfsserver import NfsServer
from tests.support.procs import start_agent

MIB = 1 << 20
# Written by `register` into the image: every point of a root volume reads it.
IMAGE_PATTERN = ("read -P 0x5a 1M 1M",)


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def qemu_io(path: str, *commands: str) -> None:
    argv = ["qemu-io"]
    for cmd in commands:
        argv += ["-c", cmd]
    out = subprocess.run([*argv, path], capture_output=True, text=True)
    assert out.returncode == 0 and "Pattern verification failed" not in out.stdout, out


class Points:
    """What each point of a volume holds: the pattern of the last write to a shared
    region, and one region per write that only that write touched."""

    def __init__(self) -> None:
        self.written: list[int] = []

    def write(self, path: str, pattern: int) -> list[int]:
        qemu_io(path, f"write -P {pattern} 0 64k",
                f"write -P {pattern} {4 + pattern % 16}M 64k")
        self.written.append(pattern)
        return list(self.written)

    @staticmethod
    def check(path: str, written: list[int], every: list[int]) -> None:
        """`written`: the patterns this point saw, in order; the others must be absent."""
        reads = [f"read -P {written[-1]} 0 64k", *IMAGE_PATTERN]
        for pattern in every:
            seen = pattern in written
            reads.append(f"read -P {pattern if seen else 0} {4 + pattern % 16}M 64k")
        qemu_io(path, *reads)


def take(stack: Stack, volume_id: str, name: str) -> dict[str, Any]:
    job = stack.wait(stack.api.post(f"/v1/volumes/{volume_id}/snapshots", {"name": name}))
    return dict(stack.api.get(f"/v1/snapshots/{job['resource_id']}"))


def revert(stack: Stack, volume_id: str, snapshot_id: str) -> dict[str, Any]:
    stack.wait(stack.api.post(f"/v1/volumes/{volume_id}/revert",
                              {"snapshot_id": snapshot_id}))
    return dict(stack.api.get(f"/v1/volumes/{volume_id}"))


def allocated(stack: Stack, primary: str) -> int:
    return int(stack.api.get(f"/v1/primary-storages/{primary}")["capacity"]["allocated"])


def snapshot_tree(stack: Stack, primary: str, volume_dir: Path, cache: str,
                  to_path: Any, image: dict[str, Any]) -> None:
    """The whole scenario on one storage: `to_path` turns a file of `volume_dir` into
    what qemu opens (a path, or an nfs:// URL)."""
    start = allocated(stack, primary)
    vol = volume(stack, primary, name="root", image_id=image["id"])
    points = Points()
    every = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66]

    # A straight chain: s1 <- s2 <- s3 <- s4 <- active.
    snaps: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for i, pattern in enumerate(every[:4], start=1):
        seen = points.write(vol["path"], pattern)
        snaps[f"s{i}"] = (take(stack, vol["id"], f"s{i}"), seen)
        vol = stack.api.get(f"/v1/volumes/{vol['id']}")
        assert vol["snapshot_id"] == snaps[f"s{i}"][0]["id"]
    s1, s4 = snaps["s1"][0], snaps["s4"][0]
    assert s1["parent_id"] is None and s4["parent_id"] == snaps["s3"][0]["id"]
    assert s1["path"] == to_path(f"{vol['id']}.qcow2"), "the first frozen file is the volume's"
    assert chain(vol["path"]) == [vol["path"], *(snaps[f"s{i}"][0]["path"]
                                                for i in (4, 3, 2, 1)), cache]
    points.write(vol["path"], every[4])
    Points.check(vol["path"], points.written, every)

    # Revert to the middle, then branch: s5 on s2.
    vol = revert(stack, vol["id"], snaps["s2"][0]["id"])
    assert vol["snapshot_id"] == snaps["s2"][0]["id"]
    assert chain(vol["path"]) == [vol["path"], snaps["s2"][0]["path"], s1["path"], cache]
    Points.check(vol["path"], snaps["s2"][1], every)
    points.written = list(snaps["s2"][1])
    snaps["s5"] = (take(stack, vol["id"], "s5"), points.write(vol["path"], every[5]))
    assert snaps["s5"][0]["parent_id"] == snaps["s2"][0]["id"]

    def check_every_point() -> None:
        nonlocal vol
        for name in sorted(snaps):
            vol = revert(stack, vol["id"], snaps[name][0]["id"])
            Points.check(vol["path"], snaps[name][1], every)
            assert chain(vol["path"])[-1] == cache
        leftovers = [p.name for p in volume_dir.iterdir() if p.name.startswith(".strata")]
        assert leftovers == []

    check_every_point()

    # Delete in the middle: s2 has two children (s3 and s5), s3 one (s4), s1 is the root
    # on the image cache. Every remaining point reads as it did.
    for name in ("s2", "s3", "s1"):
        stack.wait(stack.api.delete(f"/v1/snapshots/{snaps.pop(name)[0]['id']}"))
        check_every_point()
        files = sorted(p.name for p in volume_dir.iterdir())
        assert len(files) == len(snaps) + 1, files
    shown = {s["name"]: s for s in stack.api.get(f"/v1/volumes/{vol['id']}/snapshots?"
                                                 "state=ready")["items"]}
    assert sorted(shown) == ["s4", "s5"]
    assert shown["s4"]["parent_id"] is None and shown["s5"]["parent_id"] is None
    for snap in shown.values():
        assert chain(snap["path"]) == [snap["path"], cache]

    # The volume goes only with its snapshots, and gives back all it held.
    with pytest.raises(ApiError) as refused:
        stack.api.delete(f"/v1/volumes/{vol['id']}")
    assert refused.value.status == 409 and refused.value.code == "has_snapshots"
    assert "s4" in refused.value.message and "s5" in refused.value.message
    stack.wait(stack.api.delete(f"/v1/volumes/{vol['id']}?cascade=true"))
    assert list(volume_dir.iterdir()) == []
    states = {s["state"] for s in stack.api.get(f"/v1/snapshots?volume_id={vol['id']}")
              ["items"]}
    assert states == {"destroyed"}
    stack.wait(stack.api.delete(f"/v1/images/{image['id']}"))
    assert allocated(stack, primary) == start


def test_snapshot_tree_on_local_storage(stack: Stack, file_server: FileServer,
                                        image_dir: Path) -> None:
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    volume_dir = stack.primary_path / "volumes"
    cache = str(stack.primary_path / "imagecache" / image["id"])
    snapshot_tree(stack, stack.primary_id, volume_dir, cache,
                  lambda name: str(volume_dir / name), image)


def test_snapshot_tree_on_nfs_libnfs(stack: Stack, nfs: NfsServer, file_server: FileServer,
                                     image_dir: Path) -> None:
    share = nfs.share("snapshots")
    primary = nfs_storage(stack, nfs, share, [stack.host_id])
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    volume_dir = share / "volumes"
    cache = nfs.url(share / "imagecache" / image["id"])
    snapshot_tree(stack, primary, volume_dir, cache,
                  lambda name: nfs.url(volume_dir / name), image)


def test_chain_depth_is_bounded(stack: Stack) -> None:
    vol = volume(stack, stack.primary_id, name="deep", size=MIB)
    taken = [take(stack, vol["id"], f"d{i}")["id"] for i in range(MAX_CHAIN_DEPTH)]
    with pytest.raises(ApiError) as refused:
        stack.api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "one-more"})
    assert refused.value.status == 409 and refused.value.code == "chain_too_deep"
    path = stack.api.get(f"/v1/volumes/{vol['id']}")["path"]
    assert len(chain(path)) == MAX_CHAIN_DEPTH + 1
    stack.wait(stack.api.delete(f"/v1/snapshots/{taken[3]}"))
    take(stack, vol["id"], "after-merge")
    assert stack.api.get(f"/v1/volumes/{vol['id']}")["state"] == "ready"


def test_bad_snapshot_requests(stack: Stack) -> None:
    api = stack.api
    a = volume(stack, stack.primary_id, name="a", size=MIB)
    b = volume(stack, stack.primary_id, name="b", size=MIB)
    of_b = take(stack, b["id"], "of-b")
    with pytest.raises(ApiError) as refused:
        api.post(f"/v1/volumes/{a['id']}/revert", {"snapshot_id": of_b["id"]})
    assert refused.value.status == 400 and refused.value.code == "snapshot_of_another_volume"
    calls: list[tuple[Callable[[], object], int]] = [
        (lambda: api.post("/v1/volumes/nope/snapshots", {"name": "x"}), 404),
        (lambda: api.post(f"/v1/volumes/{a['id']}/snapshots", {"name": "../x"}), 400),
        (lambda: api.post(f"/v1/volumes/{a['id']}/revert", {"snapshot_id": "nope"}), 404),
        (lambda: api.delete("/v1/snapshots/nope"), 404),
        (lambda: api.get("/v1/volumes/nope/snapshots"), 404),
        (lambda: api.delete(f"/v1/volumes/{b['id']}?cascade=maybe"), 400),
    ]
    for call, status in calls:
        with pytest.raises(ApiError) as refused:
            call()
        assert refused.value.status == status, refused.value
    assert api.get(f"/v1/volumes/{b['id']}")["state"] == "ready"
    # A volume on snapshots becomes an image flattened (its snapshots stay).
    stack.wait(api.post("/v1/images", {"name": "of-b", "volume_id": b["id"],
                                       "backup_storage_id": stack.backup_id}))
    assert api.get(f"/v1/snapshots/{of_b['id']}")["state"] == "ready"

    # The CLI: take, list, revert, delete with cascade.
    out = strata(stack, "--json", "snapshots", "take", a["id"], "cli-snap", "--wait")
    snap = json.loads(out.stdout)["resource_id"]
    listed = json.loads(strata(stack, "--json", "snapshots", "list",
                               f"volume_id={a['id']}").stdout)["items"]
    assert [s["id"] for s in listed] == [snap]
    strata(stack, "volumes", "revert", a["id"], snap, "--wait")
    refused_cli = strata(stack, "volumes", "delete", a["id"], ok=False)
    assert "has_snapshots" in refused_cli.stderr
    strata(stack, "volumes", "delete", a["id"], "--cascade", "--wait")
    assert api.get(f"/v1/snapshots/{snap}")["state"] == "destroyed"


def test_busy_volume_is_refused_and_failed_steps_change_nothing(
        stack: Stack, nfs: NfsServer, tmp_path: Path) -> None:
    """A take stalled on a hung NFS server holds its volume: every other request on it is
    a 409 until the take fails, which leaves the volume as it was; so do a failed revert
    and a failed delete, which is then finished by deleting again."""
    agent, _ = start_agent(tmp_path / "agent-n", {"nfs_timeout": 3})
    try:
        host = enrol_host(stack.api, "host-n", agent)
        share = nfs.share("busy")
        primary = nfs_storage(stack, nfs, share, [host])
        vol = volume(stack, primary, name="busy", size=MIB)
        first = take(stack, vol["id"], "first")
        before = stack.api.get(f"/v1/volumes/{vol['id']}")
        start = allocated(stack, primary)
        with nfs.hung():
            accepted = stack.api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "stuck"})
            assert stack.api.get(f"/v1/volumes/{vol['id']}")["state"] == "snapshotting"
            busy: list[Callable[[], object]] = [
                lambda: stack.api.post(f"/v1/volumes/{vol['id']}/snapshots", {"name": "x"}),
                lambda: stack.api.post(f"/v1/volumes/{vol['id']}/revert",
                                       {"snapshot_id": first["id"]}),
                lambda: stack.api.delete(f"/v1/snapshots/{first['id']}"),
                lambda: stack.api.delete(f"/v1/volumes/{vol['id']}?cascade=true"),
            ]
            for call in busy:
                with pytest.raises(ApiError) as refused:
                    call()
                assert refused.value.status == 409, refused.value
            job = stack.wait(accepted, ok=False)
            assert job["state"] == "failed"
            assert job["error"]["code"] == "storage_unresponsive", job["error"]
            failed = stack.wait(stack.api.post(f"/v1/volumes/{vol['id']}/revert",
                                               {"snapshot_id": first["id"]}), ok=False)
            assert failed["state"] == "failed"
            failed = stack.wait(stack.api.delete(f"/v1/snapshots/{first['id']}"), ok=False)
            assert failed["state"] == "failed"
        half = stack.api.get(f"/v1/snapshots/{first['id']}")
        assert half["state"] == "error" and half["size"] == MIB and half["path"]
        stuck = stack.api.get(f"/v1/snapshots/{job['resource_id']}")
        assert stuck["state"] == "error" and stuck["path"] is None and stuck["size"] == 0
        after = stack.api.get(f"/v1/volumes/{vol['id']}")
        assert after["state"] == "ready" and after["snapshot_id"] == first["id"]
        assert after["path"] == before["path"]
        qemu_io(after["path"], "write -P 7 0 4k", "read -P 7 0 4k")
        assert allocated(stack, primary) == start
        stack.wait(stack.api.delete(f"/v1/snapshots/{first['id']}"))
        merged = stack.api.get(f"/v1/volumes/{vol['id']}")
        assert merged["snapshot_id"] is None and chain(merged["path"]) == [merged["path"]]
        qemu_io(merged["path"], "read -P 7 0 4k")
        assert allocated(stack, primary) == start - MIB
        stack.wait(stack.api.delete(f"/v1/snapshots/{stuck['id']}"))
        stack.wait(stack.api.delete(f"/v1/volumes/{vol['id']}?cascade=true"))
        assert allocated(stack, primary) == 0
    finally:
        agent.stop()
