"""Moving a volume between primary storages: strategies bid on the request and the
highest carries the copy; the real strategies' bids and the exact agent commands of
each path, against the recording fake agent."""

from __future__ import annotations

from typing import Any

import pytest

from controller.db.models import Host
from controller.jobs.engine import JobContext
from controller.motion.endpoints import ConnectedHostSelector
from controller.motion.live import LIVE_BID, LiveMigration
from controller.motion.migration import (
    SHARED_HOST_BID,
    STAGED_BID,
    SharedHostMigration,
    StagedMigration,
    VolumeMigrationStrategy,
)
from controller.motion.service import DataMotionService
from controller.motion.strategies import MediatorMotionStrategy
from controller.plugins.dir.provider import DIR
from controller.plugins.interfaces.backend import VolumeCreated
from controller.plugins.interfaces.motion import LiveTarget, Migrated, MigrateRequest
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.provider import LOCAL
from controller.plugins.matrix import default_registry
from controller.plugins.nfs.provider import NFS
from controller.plugins.registry import PluginRegistry
from shared.errors import Conflict
from shared.protocol.files import COPY_IMAGE, DELETE_FILE, BackingFile, CopyImagePayload
from shared.protocol.files import DeleteFilePayload as Delete
from shared.protocol.iscsi import EXPORT_LUN, ExportLunPayload
from shared.protocol.libvirt import LIVE_COPY, LiveCopied, LiveCopyPayload, VolumeSource
from shared.protocol.volumes import (
    CLONE_LAYER,
    COMPARE_VOLUMES,
    COPY_VOLUME,
    CREATE_VOLUME,
    CloneLayerPayload,
    CopyVolumePayload,
    CreateVolumePayload,
)
from tests.unit.controller.fakes import (
    CAPACITY,
    SHA,
    Call,
    RecordingAgent,
    backup,
    host,
    primary,
    volume,
)

A, B, SERVER = host("kvm-a"), host("kvm-b"), host("storage-1")
LOCAL_A = primary(LOCAL, {"path": "/srv/a"}, "ps-a")
NFS_B = primary(NFS, {"server": "nfs.example", "export": "/exports/b", "mode": "mount",
                      "mount_point": "/mnt/b"}, "ps-b")
SAN = primary(ISCSI, {"server_host_id": SERVER.id, "path": "/srv/san",
                      "portal": "10.0.0.9:3260"}, "ps-san")
STORE = backup(DIR, {"path": "/srv/backup"})
CACHE = BackingFile(path="/mnt/b/imagecache/img-1", format="qcow2")
VOLUME = volume(id="vol-1", path="/srv/a/volumes/vol-1.qcow2")


def request(source: Any, dest: Any, source_hosts: list[Host], dest_hosts: list[Host],
            backing: BackingFile | None = None,
            live: LiveTarget | None = None) -> MigrateRequest:
    return MigrateRequest(volume=VOLUME, source=source, dest=dest, source_hosts=source_hosts,
                          dest_hosts=dest_hosts, backing=backing, staging=[STORE],
                          task_prefix="job-1.migrate", live=live)


class Fixed(VolumeMigrationStrategy):
    """Bids what it is told; records that it carried the copy."""

    def __init__(self, registry: PluginRegistry, bid: int) -> None:
        super().__init__(registry)
        self.bid, self.carried = bid, 0

    def bid_migrate(self, request: MigrateRequest) -> int:
        return self.bid

    async def migrate(self, ctx: JobContext, request: MigrateRequest) -> Migrated:
        self.carried += 1
        return Migrated(VolumeCreated("/x", 1, CAPACITY), on_cache=False)


@pytest.fixture
def registry() -> PluginRegistry:
    return default_registry()


def service(registry: PluginRegistry, *strategies: Any) -> DataMotionService:
    return DataMotionService(registry, ConnectedHostSelector(registry), list(strategies))


async def test_the_highest_bid_carries_the_migration(ctx: JobContext,
                                                     registry: PluginRegistry) -> None:
    low, high, other = Fixed(registry, 5), Fixed(registry, 20), Fixed(registry, 20)
    motion = service(registry, MediatorMotionStrategy(registry), low, high, other)
    await motion.migrate(ctx, request(LOCAL_A, NFS_B, [A], [A]))
    assert (low.carried, high.carried, other.carried) == (0, 1, 0), "first of the highest"
    nobody = service(registry, MediatorMotionStrategy(registry), Fixed(registry, 0))
    with pytest.raises(Conflict) as refused:
        await nobody.migrate(ctx, request(LOCAL_A, NFS_B, [A], [A]))
    assert refused.value.code == "no_migration_path"


async def test_one_host_reaching_both_outbids_staging(
        ctx: JobContext, agent: RecordingAgent, registry: PluginRegistry) -> None:
    shared, staged = SharedHostMigration(registry), StagedMigration(registry)
    motion = service(registry, staged, shared)
    req = request(LOCAL_A, NFS_B, [A], [B, A], backing=CACHE)
    assert (shared.bid_migrate(req), staged.bid_migrate(req)) == (SHARED_HOST_BID, STAGED_BID)
    assert motion.migration_strategy(req) is shared
    done = await motion.migrate(ctx, req)
    assert done.on_cache and done.created.path == "/mnt/b/volumes/vol-1.qcow2"
    assert agent.calls == [Call(A.address, COPY_VOLUME, "job-1.copy-vol-1.qcow2", CopyVolumePayload(
        source=BackingFile(path=VOLUME.path or "", format="qcow2"),
        dest_dir="/mnt/b/volumes", file_name="vol-1.qcow2", backing=CACHE))]


async def test_no_shared_host_stages_through_the_backup_storage(
        ctx: JobContext, agent: RecordingAgent, registry: PluginRegistry) -> None:
    shared, staged = SharedHostMigration(registry), StagedMigration(registry)
    req = request(LOCAL_A, NFS_B, [A], [B], backing=CACHE)
    assert (shared.bid_migrate(req), staged.bid_migrate(req)) == (0, STAGED_BID)
    done = await service(registry, shared, staged).migrate(ctx, req)
    assert done.on_cache, "what comes down is rebased onto the cache"
    staged_file = "/srv/a/volumes/vol-1.staged.qcow2"
    assert agent.calls == [
        Call(A.address, COPY_VOLUME, "job-1.migrate.stage", CopyVolumePayload(
            source=BackingFile(path=VOLUME.path or "", format="qcow2"),
            dest_dir="/srv/a/volumes", file_name="vol-1.staged.qcow2")),
        Call(A.address, COPY_IMAGE, "job-1.migrate.up", CopyImagePayload(
            src_path=staged_file, dest_dir="/srv/backup/images",
            file_name="vol-1.staged.qcow2")),
        Call(A.address, DELETE_FILE, "job-1.unstage-source",
             Delete(dir="/srv/a/volumes", file_name="vol-1.staged.qcow2")),
        Call(B.address, COPY_IMAGE, "job-1.migrate.down", CopyImagePayload(
            src_path="/srv/backup/images/vol-1.staged.qcow2",
            dest_dir="/mnt/b/volumes", file_name="vol-1.staged.qcow2",
            expected_sha256=SHA, expected_format="qcow2")),
        Call(B.address, DELETE_FILE, "job-1.delete-staged-vol-1",
             Delete(dir="/srv/backup/images", file_name="vol-1.staged.qcow2")),
        Call(B.address, CLONE_LAYER, "job-1.clone-vol-1", CloneLayerPayload(
            dir="/mnt/b/volumes", source="vol-1.staged.qcow2", file_name="vol-1.qcow2",
            backing=CACHE, drop_source=True)),
    ]
    # Without a cache the copy comes down under the volume's own name, whole.
    agent.calls.clear()
    done = await staged.migrate(ctx, request(LOCAL_A, NFS_B, [A], [B]))
    assert not done.on_cache and done.created.path == "/mnt/b/volumes/vol-1.qcow2"
    assert CLONE_LAYER not in [c.command for c in agent.calls]


async def test_a_failed_migration_abandons_what_staging_left(
        ctx: JobContext, agent: RecordingAgent, registry: PluginRegistry) -> None:
    """Every strategy clears up after a failure, through the hosts still there: the staged
    copy beside the source, in the backup storage and beside the destination; none of
    it where no host reaches."""
    motion = service(registry, SharedHostMigration(registry), StagedMigration(registry))
    await motion.abandon_migrate(ctx, request(LOCAL_A, NFS_B, [A], [B]))
    assert [(c.address, c.payload) for c in agent.calls] == [
        (B.address, Delete(dir="/srv/backup/images", file_name="vol-1.staged.qcow2")),
        (A.address, Delete(dir="/srv/a/volumes", file_name="vol-1.staged.qcow2")),
        (B.address, Delete(dir="/mnt/b/volumes", file_name="vol-1.staged.qcow2"))]
    agent.calls.clear()
    await motion.abandon_migrate(ctx, request(LOCAL_A, NFS_B, [A], []))
    assert [(c.address, c.payload) for c in agent.calls] == [
        (A.address, Delete(dir="/srv/backup/images", file_name="vol-1.staged.qcow2")),
        (A.address, Delete(dir="/srv/a/volumes", file_name="vol-1.staged.qcow2"))]


async def test_iscsi_is_filled_by_its_server_and_compared(
        ctx: JobContext, agent: RecordingAgent, registry: PluginRegistry) -> None:
    """A LUN is never staged (a backup storage fills image caches, not LUNs): only a
    storage server that reaches the source bids."""
    shared, staged = SharedHostMigration(registry), StagedMigration(registry)
    assert staged.bid_migrate(request(LOCAL_A, SAN, [A], [SERVER])) == 0
    assert shared.bid_migrate(request(LOCAL_A, SAN, [A], [SERVER])) == 0
    assert shared.bid_migrate(request(SAN, SAN, [SERVER], [SERVER])) == 0, "one prefix"
    other = primary(ISCSI, {"server_host_id": SERVER.id, "path": "/srv/san-2",
                            "portal": "10.0.0.9:3260", "target_prefix": "iqn.2026-11.x.two"},
                    "ps-san-2")
    lun = volume(id="vol-1", path="/srv/san/luns/vol-1.raw", format="raw")
    between = MigrateRequest(volume=lun, source=SAN, dest=other, source_hosts=[SERVER],
                             dest_hosts=[SERVER], backing=None, staging=[STORE],
                             task_prefix="job-1.migrate")
    assert shared.bid_migrate(between) == SHARED_HOST_BID, "LUN to LUN of another prefix"
    req = request(LOCAL_A, SAN, [SERVER], [SERVER], backing=CACHE)
    assert shared.bid_migrate(req) == SHARED_HOST_BID
    done = await service(registry, shared, staged).migrate(ctx, req)
    assert not done.on_cache and done.created.format == "raw"
    assert [(c.address, c.command, c.task_id) for c in agent.calls] == [
        (SERVER.address, EXPORT_LUN, "job-1.copy-to-ps-san"),
        (SERVER.address, COMPARE_VOLUMES, "job-1.verify-ps-san")]
    export = agent.calls[0].payload
    assert isinstance(export, ExportLunPayload)
    assert export.source == BackingFile(path=VOLUME.path or "", format="qcow2")


async def test_an_attached_volume_moves_live_only(
        ctx: JobContext, agent: RecordingAgent, registry: PluginRegistry) -> None:
    """Only the live strategy bids on an attached volume, and only where its host reaches
    the destination and both sides are qcow2 files: the destination is made on that
    host (on the image cache: a shallow copy), then the domain copies into it."""
    strategies = SharedHostMigration(registry), StagedMigration(registry), LiveMigration(
        registry)
    vm = LiveTarget(A, "vm1")
    req = request(LOCAL_A, NFS_B, [A], [B, A], backing=CACHE, live=vm)
    assert [s.bid_migrate(req) for s in strategies] == [0, 0, LIVE_BID]
    assert strategies[2].bid_migrate(request(LOCAL_A, NFS_B, [A], [A])) == 0, "not attached"
    assert strategies[2].bid_migrate(request(LOCAL_A, NFS_B, [A], [B], live=vm)) == 0
    with pytest.raises(Conflict) as refused:
        service(registry, *strategies).migration_strategy(
            request(LOCAL_A, SAN, [A], [SERVER], live=vm))
    assert refused.value.code == "volume_attached" and "vm1" in str(refused.value)

    agent.answers["live_copy"] = lambda p: LiveCopied(copied=1 << 20, seconds=0.5)
    done = await service(registry, *strategies).migrate(ctx, req)
    assert done.on_cache and done.created.path == "/mnt/b/volumes/vol-1.qcow2"
    assert agent.calls == [
        Call(A.address, CREATE_VOLUME, "job-1.create-volume", CreateVolumePayload(
            dest_dir="/mnt/b/volumes", file_name="vol-1.qcow2", size=VOLUME.size,
            backing=CACHE)),
        Call(A.address, LIVE_COPY, "job-1.migrate.live", LiveCopyPayload(
            domain="vm1", serial="vol-1", source=VOLUME.path or "", shallow=True,
            dest=VolumeSource(path="/mnt/b/volumes/vol-1.qcow2", format="qcow2",
                                  dirs=["/mnt/b/volumes", "/mnt/b/imagecache"])))]
