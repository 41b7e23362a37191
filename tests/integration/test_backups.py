"""Snapshot backups end to end, with real qemu-img and qemu-io: a distinct byte pattern
written before each snapshot, each snapshot backed up to a `dir`, an `sftp` (OpenSSH's
sshd) and an `s3` store (the S3-compatible server), each backup restored to a new volume
whose patterns are read back; a volume and an image made of a snapshot; bad requests."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError
from tests.conftest import Stack
from tests.integration.test_cli import strata
from tests.integration.test_nfs import chain, nfs_storage, register, volume
from tests.integration.test_snapshots import Points, qemu_io, take
from tests.support.fileserver import FileServer
from tests.support.nfsserver import NfsServer
from tests.support.postgres import PostgresServer
from tests.support.s3server import S3Server
from tests.support.sshd import SshServer

EVERY = [0x11, 0x22, 0x33]


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite; PostgreSQL too for the one test that asks for it (CI time)."""
    if request.param == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.new_database()
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def back_up(stack: Stack, snapshot_id: str, store_id: str) -> dict[str, Any]:
    job = stack.wait(stack.api.post(f"/v1/snapshots/{snapshot_id}/backups",
                                    {"backup_storage_id": store_id}))
    assert job["resource_type"] == "snapshot_backup"
    return dict(stack.api.get(f"/v1/snapshot-backups/{job['resource_id']}"))


def refused(call: Callable[[], object], status: int, code: str | None = None) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    assert info.value.status == status, info.value
    if code is not None:
        assert info.value.code == code, info.value
    return info.value


def snapshots_with_patterns(stack: Stack, primary: str,
                            image: dict[str, Any]) -> tuple[dict[str, Any],
                                                            list[tuple[dict[str, Any],
                                                                       list[int]]]]:
    """A root volume with a snapshot after each pattern written, and one more pattern on
    its active layer, which no snapshot holds."""
    vol = volume(stack, primary, name="root", image_id=image["id"])
    points = Points()
    snaps = []
    for i, pattern in enumerate(EVERY, start=1):
        seen = points.write(vol["path"], pattern)
        snaps.append((take(stack, vol["id"], f"s{i}"), seen))
        vol = stack.api.get(f"/v1/volumes/{vol['id']}")
    points.write(vol["path"], 0x44)
    return vol, snaps


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_backups_to_every_store_and_restores(
        stack: Stack, sshd: SshServer, s3: S3Server, nfs: NfsServer,
        file_server: FileServer, image_dir: Path, tmp_path: Path) -> None:
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    cache = str(stack.primary_path / "imagecache" / image["id"])
    vol, snaps = snapshots_with_patterns(stack, stack.primary_id, image)
    sftp_store = stack.wait(stack.api.post("/v1/backup-storages", {
        "name": "sftp", "type": "sftp",
        "config": {**sshd.endpoint(), "path": str(tmp_path / "sftp-store")}}))["resource_id"]
    s3_store = stack.wait(stack.api.post("/v1/backup-storages", {
        "name": "s3", "type": "s3",
        "config": {**s3.endpoint(), "prefix": "cloud-1/"}}))["resource_id"]

    def stored(store: str, backup: dict[str, Any]) -> bytes:
        name = f"{vol['id']}.{backup['snapshot_id']}.qcow2"
        if store == stack.backup_id:
            return (stack.backup_path / "snapshots" / name).read_bytes()
        if store == sftp_store:
            return (tmp_path / "sftp-store" / "snapshots" / name).read_bytes()
        body = s3.client().get_object(Bucket=s3.bucket, Key=f"cloud-1/snapshots/{name}")
        return bytes(body["Body"].read())

    backups: dict[str, list[dict[str, Any]]] = {}
    for store in (stack.backup_id, sftp_store, s3_store):
        backups[store] = []
        for snap, _ in snaps:
            backup = back_up(stack, snap["id"], store)
            assert backup["state"] == "ready" and backup["volume_id"] == vol["id"]
            assert backup["image_id"] == image["id"]
            data = stored(store, backup)
            assert backup["sha256"] == hashlib.sha256(data).hexdigest()
            assert backup["size"] == len(data)
            backups[store].append(backup)
        shown = stack.api.get(f"/v1/backup-storages/{store}")
        assert shown["capacity_allocated"] == sum(b["size"] for b in backups[store])
    listed = stack.api.get(f"/v1/snapshots/{snaps[0][0]['id']}/backups")["items"]
    assert sorted(b["backup_storage_id"] for b in listed) == sorted(backups)
    assert stack.api.get(f"/v1/volumes/{vol['id']}")["state"] == "ready"
    # The flattened file sits on nothing: a backup holds the whole chain it was taken on.
    flat = tmp_path / "flat.qcow2"
    flat.write_bytes(stored(stack.backup_id, backups[stack.backup_id][2]))
    assert chain(str(flat)) == [str(flat)]
    Points.check(str(flat), snaps[2][1], EVERY)

    # Each backup restored on the storage that caches the image: rebased onto the cache.
    for store, made in backups.items():
        for backup, (_, seen) in zip(made, snaps, strict=True):
            restored = volume(stack, stack.primary_id, name="restored",
                              backup_id=backup["id"])
            assert restored["image_id"] == image["id"]
            assert chain(restored["path"]) == [restored["path"], cache], store
            Points.check(restored["path"], seen, EVERY)
            stack.wait(stack.api.delete(f"/v1/volumes/{restored['id']}"))
    assert not [p for p in (stack.primary_path / "volumes").iterdir()
                if p.name.startswith(".strata") or "restored" in p.name]

    # On an NFS storage (libnfs) that has no cache of the image: a flat volume.
    share = nfs.share("restores")
    primary = nfs_storage(stack, nfs, share, [stack.host_id])
    for store in (sftp_store, s3_store):
        restored = volume(stack, primary, name="on-nfs", backup_id=backups[store][1]["id"])
        assert restored["image_id"] is None
        assert chain(restored["path"]) == [restored["path"]]
        Points.check(restored["path"], snaps[1][1], EVERY)
    assert sorted(p.name for p in (share / "volumes").iterdir()
                  if not p.name.startswith(".strata")) == sorted(
        f"{v['id']}.restored.qcow2" for v in stack.api.get(
            f"/v1/volumes?primary_storage_id={primary}")["items"])

    # A snapshot of a volume on NFS (libnfs: the chain is read through nfs:// URLs)
    # backed up, then restored onto local storage.
    data = volume(stack, primary, name="on-nfs-data", size=8 << 20)
    qemu_io(data["path"], "write -P 0x66 0 64k")
    nfs_snap = take(stack, data["id"], "n1")
    qemu_io(stack.api.get(f"/v1/volumes/{data['id']}")["path"], "write -P 0x67 0 64k")
    nfs_backup = back_up(stack, nfs_snap["id"], sftp_store)
    back = volume(stack, stack.primary_id, name="from-nfs", backup_id=nfs_backup["id"])
    assert chain(back["path"]) == [back["path"]]
    qemu_io(back["path"], "read -P 0x66 0 64k")
    backups[sftp_store].append(nfs_backup)

    # Backups outlive their snapshot; deleting them empties the store's ledger.
    stack.wait(stack.api.delete(f"/v1/snapshots/{snaps[0][0]['id']}"))
    again = volume(stack, stack.primary_id, name="after", backup_id=backups[s3_store][0]["id"])
    Points.check(again["path"], snaps[0][1], EVERY)
    for store, made in backups.items():
        for backup in made:
            stack.wait(stack.api.delete(f"/v1/snapshot-backups/{backup['id']}"))
            assert stack.api.get(f"/v1/snapshot-backups/{backup['id']}")["state"] == "destroyed"
        assert stack.api.get(f"/v1/backup-storages/{store}")["capacity_allocated"] == 0
    assert list((stack.backup_path / "snapshots").iterdir()) == []
    assert list((tmp_path / "sftp-store" / "snapshots").iterdir()) == []
    assert s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="cloud-1/snapshots/")[
        "KeyCount"] == 0


def test_volume_and_image_of_a_snapshot(stack: Stack, file_server: FileServer,
                                        image_dir: Path) -> None:
    image = register(stack, file_server, image_dir, stack.backup_id, "base")
    cache = str(stack.primary_path / "imagecache" / image["id"])
    vol, snaps = snapshots_with_patterns(stack, stack.primary_id, image)

    # A copy of the middle snapshot, on the image cache: not on the snapshot's files.
    copy = volume(stack, stack.primary_id, name="copy", snapshot_id=snaps[1][0]["id"])
    assert chain(copy["path"]) == [copy["path"], cache]
    assert copy["image_id"] == image["id"] and copy["size"] == vol["size"]
    Points.check(copy["path"], snaps[1][1], EVERY)
    qemu_io(copy["path"], "write -P 0x77 0 64k")
    Points.check(snaps[1][0]["path"], snaps[1][1], EVERY)
    assert stack.api.get(f"/v1/volumes/{vol['id']}")["state"] == "ready"

    # An image of the last snapshot: flattened, registered with its sha256, the base of a
    # new root volume that reads that snapshot's patterns (and the image's).
    job = stack.wait(stack.api.post("/v1/images", {
        "name": "of-s3", "snapshot_id": snaps[2][0]["id"],
        "backup_storage_id": stack.backup_id}))
    made = stack.api.get(f"/v1/images/{job['resource_id']}")
    stored = stack.backup_path / "images" / made["id"]
    assert made["state"] == "ready" and made["format"] == "qcow2"
    assert made["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert chain(str(stored)) == [str(stored)]
    root = volume(stack, stack.primary_id, name="of-template", image_id=made["id"])
    Points.check(root["path"], snaps[2][1], EVERY)

    # An image of a linked clone on snapshots (the volume itself) flattens it too.
    job = stack.wait(stack.api.post("/v1/images", {
        "name": "of-root", "volume_id": vol["id"], "backup_storage_id": stack.backup_id}))
    of_root = stack.api.get(f"/v1/images/{job['resource_id']}")
    root2 = volume(stack, stack.primary_id, name="of-root", image_id=of_root["id"])
    Points.check(root2["path"], [*snaps[2][1], 0x44], [*EVERY, 0x44])
    assert stack.api.get(f"/v1/volumes/{vol['id']}")["state"] == "ready"


def test_bad_backup_requests(stack: Stack, file_server: FileServer, image_dir: Path,
                             tmp_path: Path) -> None:
    api = stack.api
    vol = volume(stack, stack.primary_id, name="v", size=1 << 20)
    other = volume(stack, stack.primary_id, name="w", size=1 << 20)
    snap = take(stack, vol["id"], "s")
    backups = f"/v1/snapshots/{snap['id']}/backups"
    refused(lambda: api.post(backups, {"backup_storage_id": "nope"}), 404, "not_found")
    refused(lambda: api.post("/v1/snapshots/nope/backups",
                             {"backup_storage_id": stack.backup_id}), 404, "not_found")
    refused(lambda: api.post(backups, {}), 400)
    refused(lambda: api.get("/v1/snapshots/nope/backups"), 404)
    refused(lambda: api.delete("/v1/snapshot-backups/nope"), 404)
    refused(lambda: api.post("/v1/volumes", {"name": "x", "primary_storage_id":
                                             stack.primary_id, "backup_id": "nope"}), 404)
    refused(lambda: api.post("/v1/volumes", {"name": "x", "primary_storage_id":
                                             stack.primary_id, "snapshot_id": snap["id"],
                                             "size": 1 << 20}), 400)
    refused(lambda: api.post("/v1/volumes", {"name": "x", "primary_storage_id":
                                             stack.primary_id, "snapshot_id": snap["id"],
                                             "backup_id": "b"}), 400)

    # A snapshot that is not ready (deleted: it holds no file any more).
    stuck = take(stack, other["id"], "t")
    stack.wait(api.delete(f"/v1/snapshots/{stuck['id']}"))
    refused(lambda: api.post(f"/v1/snapshots/{stuck['id']}/backups",
                             {"backup_storage_id": stack.backup_id}), 409, "snapshot_not_ready")
    refused(lambda: api.post("/v1/volumes", {"name": "x", "primary_storage_id":
                                             stack.primary_id, "snapshot_id": stuck["id"]}),
            409, "snapshot_not_ready")

    # A second backup of a snapshot on one store.
    backup = back_up(stack, snap["id"], stack.backup_id)
    refused(lambda: api.post(backups, {"backup_storage_id": stack.backup_id}), 409,
            "backup_exists")
    assert "snapshot backups" in refused(
        lambda: api.delete(f"/v1/backup-storages/{stack.backup_id}"), 409).message

    # A store that is gone: the job fails, nothing is left half-written, the volume free.
    store = stack.wait(api.post("/v1/backup-storages", {
        "name": "gone", "type": "dir", "config": {"path": str(tmp_path / "gone")}}))
    (tmp_path / "gone" / "snapshots").rmdir()
    (tmp_path / "gone" / "snapshots").write_text("not a directory")
    failed = stack.wait(api.post(backups, {"backup_storage_id": store["resource_id"]}),
                        ok=False)
    assert failed["state"] == "failed" and failed["error"]["message"]
    shown = api.get(f"/v1/snapshot-backups/{failed['resource_id']}")
    assert shown["state"] == "error" and shown["size"] == 0
    assert api.get(f"/v1/volumes/{vol['id']}")["state"] == "ready"
    assert api.get(f"/v1/backup-storages/{store['resource_id']}")["capacity_allocated"] == 0
    assert not [p for p in (tmp_path / "gone").iterdir() if p.name.startswith(".strata")]

    # The CLI: back up, list, restore, delete.
    out = strata(stack, "--json", "snapshots", "backups", snap["id"])
    assert backup["id"] in out.stdout
    strata(stack, "volumes", "create", "from-cli", "--primary-storage", stack.primary_id,
           "--backup", backup["id"], "--wait")
    strata(stack, "volumes", "create", "copy-cli", "--primary-storage", stack.primary_id,
           "--snapshot", snap["id"], "--wait")
    strata(stack, "backups", "delete", backup["id"], "--wait")
    assert api.get(f"/v1/snapshot-backups/{backup['id']}")["state"] == "destroyed"
    strata(stack, "snapshots", "backup", snap["id"], "--backup-storage", stack.backup_id,
           "--wait")
    listed = api.get(f"/v1/snapshot-backups?snapshot_id={snap['id']}&state=ready")["items"]
    assert len(listed) == 1
