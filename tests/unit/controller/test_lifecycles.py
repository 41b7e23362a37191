"""Each storage type's lifecycle: what attaching a store to a host (and detaching it)
asks of the agents."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import AttachState, PrimaryStorageHostRef
from controller.jobs.engine import JobContext
from controller.plugins.dir.provider import DIR
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.provider import LOCAL
from controller.plugins.nfs.provider import NFS
from controller.plugins.s3.provider import S3
from controller.plugins.sftp.provider import SFTP
from shared.errors import Conflict, NotFound
from shared.protocol.files import PREPARE_STORAGE, PrepareStoragePayload
from shared.protocol.nfs import NFS_MOUNT, NFS_UNMOUNT, NfsMountPayload, NfsUnmountPayload
from shared.protocol.s3 import S3_PREPARE, S3PreparePayload
from shared.protocol.sftp import SFTP_PREPARE, SftpPreparePayload
from tests.unit.controller.fakes import (
    CAPACITY,
    NFS_SERVER,
    S3_CONFIG,
    S3_ENDPOINT,
    SFTP_CONFIG,
    SFTP_ENDPOINT,
    Call,
    RecordingAgent,
    backup,
    host,
    primary,
)

HOST = host()



async def test_local_attach_prepares_the_directory(ctx: JobContext,
                                                   agent: RecordingAgent) -> None:
    store = primary(LOCAL, {"path": "/srv/local"})
    assert await LOCAL.lifecycle.attach(ctx, store, HOST) == CAPACITY
    await LOCAL.lifecycle.detach(ctx, store, HOST)
    assert agent.calls == [Call(HOST.address, PREPARE_STORAGE, "job-1.prepare-ps-1-host-kvm-1",
                                PrepareStoragePayload(path="/srv/local",
                                                      subdirs=["volumes", "imagecache"]))]


async def test_local_storage_belongs_to_one_host(db: async_sessionmaker[AsyncSession]) -> None:
    store, other = primary(LOCAL, {"path": "/srv/local"}), host("kvm-2")
    async with db.begin() as session:
        session.add_all([store.row, HOST, other])
        await session.flush()
        session.add(PrimaryStorageHostRef(primary_storage_id=store.id, host_id=HOST.id,
                                          state=AttachState.CONNECTED))
    async with db() as session:
        await LOCAL.lifecycle.can_attach(session, store, HOST)
        with pytest.raises(Conflict) as refused:
            await LOCAL.lifecycle.can_attach(session, store, other)
    assert refused.value.code == "already_attached"


async def test_nfs_attach_mounts_then_prepares(ctx: JobContext, agent: RecordingAgent) -> None:
    store = primary(NFS, {**NFS_SERVER, "mount_options": "vers=4.1,hard"})
    assert await NFS.lifecycle.attach(ctx, store, HOST) == CAPACITY
    await NFS.lifecycle.detach(ctx, store, HOST)
    mount_point = "/var/lib/strata/mnt/ps-1"
    assert agent.calls == [
        Call(HOST.address, NFS_MOUNT, "job-1.mount-ps-1-host-kvm-1", NfsMountPayload(
            server="nfs.example", export="/exports/strata", mount_point=mount_point,
            options=["vers=4.1", "hard"], user="ps-1")),
        Call(HOST.address, PREPARE_STORAGE, "job-1.prepare-ps-1-host-kvm-1",
             PrepareStoragePayload(path=mount_point, subdirs=["volumes", "imagecache"])),
        Call(HOST.address, NFS_UNMOUNT, "job-1.unmount-ps-1-host-kvm-1",
             NfsUnmountPayload(mount_point=mount_point, user="ps-1")),
    ]


async def test_libnfs_attach_mounts_nothing(ctx: JobContext, agent: RecordingAgent) -> None:
    store = primary(NFS, {**NFS_SERVER, "mode": "libnfs"})
    await NFS.lifecycle.attach(ctx, store, HOST)
    await NFS.lifecycle.detach(ctx, store, HOST)
    assert agent.calls == [Call(HOST.address, PREPARE_STORAGE, "job-1.prepare-ps-1-host-kvm-1",
                                PrepareStoragePayload(path="nfs://nfs.example/exports/strata",
                                                      subdirs=["volumes", "imagecache"]))]


async def test_iscsi_attach_prepares_on_the_server(ctx: JobContext, agent: RecordingAgent,
                                                   db: async_sessionmaker[AsyncSession]) -> None:
    server = host("storage-1")
    store = primary(ISCSI, {"server_host_id": server.id, "path": "/srv/iscsi",
                            "portal": "10.0.0.9:3260", "volume_group": "strata-vg"})
    async with db.begin() as session:
        session.add(server)
    async with db() as session:
        await ISCSI.lifecycle.check_config(session, store.config)
        await ISCSI.lifecycle.can_attach(session, store, HOST)
    assert await ISCSI.lifecycle.attach(ctx, store, HOST) == CAPACITY
    assert agent.calls == [Call(server.address, PREPARE_STORAGE, "job-1.prepare-ps-1-host-kvm-1",
                                PrepareStoragePayload(path="/srv/iscsi",
                                                      subdirs=["luns", "imagecache", "snapshots"],
                                                      volume_group="strata-vg"))]


async def test_iscsi_refuses_what_it_cannot_serve(ctx: JobContext, agent: RecordingAgent,
                                                  db: async_sessionmaker[AsyncSession]) -> None:
    store = primary(ISCSI, {"server_host_id": "host-gone", "path": "/srv/iscsi",
                            "portal": "10.0.0.9:3260"})
    async with db() as session:
        with pytest.raises(NotFound):
            await ISCSI.lifecycle.check_config(session, store.config)
        with pytest.raises(Conflict) as refused:
            await ISCSI.lifecycle.can_attach(session, store, host(initiator_iqn=None))
    assert refused.value.code == "no_initiator"
    with pytest.raises(NotFound):
        await ISCSI.lifecycle.attach(ctx, store, HOST)
    assert agent.calls == []


async def test_dir_attach_prepares_the_image_directory(ctx: JobContext,
                                                       agent: RecordingAgent) -> None:
    store = backup(DIR, {"path": "/srv/images"})
    assert await DIR.lifecycle.attach(ctx, store, HOST) == CAPACITY
    assert agent.calls == [Call(HOST.address, PREPARE_STORAGE, "job-1.prepare-bs-1-host-kvm-1",
                                PrepareStoragePayload(path="/srv/images",
                                                      subdirs=["images", "snapshots"]))]


async def test_sftp_attach_opens_the_sealed_key(ctx: JobContext, agent: RecordingAgent) -> None:
    store = backup(SFTP, SFTP_CONFIG)
    assert store.config.private_key != SFTP_CONFIG["private_key"], "stored sealed"
    assert await SFTP.lifecycle.attach(ctx, store, HOST) == CAPACITY
    assert agent.calls == [Call(HOST.address, SFTP_PREPARE, "job-1.prepare-bs-1-host-kvm-1",
                                SftpPreparePayload(endpoint=SFTP_ENDPOINT, path="/srv/sftp",
                                                   subdirs=["images", "snapshots"]))]


async def test_s3_attach_checks_the_bucket(ctx: JobContext, agent: RecordingAgent) -> None:
    store = backup(S3, S3_CONFIG)
    assert len(store.config.secret_key) > 256, "sealed, longer than the clear limit"
    assert await S3.lifecycle.attach(ctx, store, HOST) == CAPACITY
    assert agent.calls == [Call(HOST.address, S3_PREPARE, "job-1.prepare-bs-1-host-kvm-1",
                                S3PreparePayload(endpoint=S3_ENDPOINT))]
