"""Each primary storage type's KVM backend: the exact command, task and payload every
operation sends, and what it makes of the answer."""

from __future__ import annotations

import pytest

from controller.jobs.engine import JobContext
from controller.plugins.interfaces.backend import VolumeCreated
from controller.plugins.iscsi.kvm import ISCSI_KVM
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.kvm import LOCAL_KVM
from controller.plugins.local.provider import LOCAL
from controller.plugins.nfs.kvm import NFS_KVM
from controller.plugins.nfs.provider import NFS
from shared.protocol.files import DELETE_FILE, BackingFile, DeleteFilePayload
from shared.protocol.iscsi import (
    EXPORT_LUN,
    UNEXPORT_LUN,
    ChapCredentials,
    ExportLunPayload,
    IscsiTarget,
    UnexportLunPayload,
)
from shared.protocol.volumes import CREATE_VOLUME, CreateVolumePayload
from tests.unit.controller.fakes import (
    CAPACITY,
    NFS_SERVER,
    Call,
    RecordingAgent,
    cache,
    host,
    primary,
    volume,
)

HOST = host()
SERVER = host("storage-1")
# Where each file backend keeps volumes and caches: (store, volume dir, cache dir).
FILE_STORES = {
    "local": (LOCAL_KVM, primary(LOCAL, {"path": "/srv/local"}),
              "/srv/local/volumes", "/srv/local/imagecache"),
    "nfs-mount": (NFS_KVM, primary(NFS, NFS_SERVER),
                  "/var/lib/strata/mnt/ps-1/volumes", "/var/lib/strata/mnt/ps-1/imagecache"),
    "nfs-mount-point": (NFS_KVM, primary(NFS, {**NFS_SERVER, "mount_point": "/mnt/shared"}),
                        "/mnt/shared/volumes", "/mnt/shared/imagecache"),
    "nfs-libnfs": (NFS_KVM, primary(NFS, {**NFS_SERVER, "mode": "libnfs"}),
                   "nfs://nfs.example/exports/strata/volumes",
                   "nfs://nfs.example/exports/strata/imagecache"),
}
ISCSI_CONFIG = {"server_host_id": SERVER.id, "path": "/srv/iscsi", "portal": "10.0.0.9:3260"}
TARGET = "iqn.2026-11.org.strata:vol-1"


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_empty_qcow2_volume(kind: str, ctx: JobContext, agent: RecordingAgent) -> None:
    backend, store, volumes, _ = FILE_STORES[kind]
    created = await backend.create_volume(ctx, store, volume(), HOST, None)
    assert agent.calls == [Call(HOST.address, CREATE_VOLUME, "job-1.create-volume",
                                CreateVolumePayload(dest_dir=volumes, file_name="vol-1.qcow2",
                                                    size=1 << 30))]
    assert created == VolumeCreated(f"{volumes}/vol-1.qcow2", 1 << 30, CAPACITY)


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_root_volume_is_a_linked_clone_of_the_cache(kind: str, ctx: JobContext,
                                                          agent: RecordingAgent) -> None:
    backend, store, volumes, caches = FILE_STORES[kind]
    backing = BackingFile(path=f"{caches}/img-1", format="qcow2")
    created = await backend.create_volume(ctx, store, volume(), HOST, backing)
    assert agent.calls == [Call(HOST.address, CREATE_VOLUME, "job-1.create-volume",
                                CreateVolumePayload(dest_dir=volumes, file_name="vol-1.qcow2",
                                                    size=1 << 30, backing=backing))]
    assert created.format == "qcow2" and created.export is None


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_delete_qcow2_volume_and_cache(kind: str, ctx: JobContext,
                                             agent: RecordingAgent) -> None:
    backend, store, volumes, caches = FILE_STORES[kind]
    assert await backend.delete_volume(ctx, store, volume(), HOST) == CAPACITY
    assert await backend.delete_cache(ctx, store, cache(f"{caches}/img-1"), HOST) == CAPACITY
    assert agent.calls == [
        Call(HOST.address, DELETE_FILE, "job-1.delete-vol-1",
             DeleteFilePayload(dir=volumes, file_name="vol-1.qcow2")),
        Call(HOST.address, DELETE_FILE, "job-1.delete-cache-1",
             DeleteFilePayload(dir=caches, file_name="img-1")),
    ]


async def test_iscsi_volume_is_an_exported_lun(ctx: JobContext, agent: RecordingAgent) -> None:
    store = primary(ISCSI, ISCSI_CONFIG)
    created = await ISCSI_KVM.create_volume(ctx, store, volume(), SERVER, None)
    assert agent.calls == [Call(SERVER.address, EXPORT_LUN, "job-1.export-lun", ExportLunPayload(
        dir="/srv/iscsi/luns", file_name="vol-1.raw", size=1 << 30, target=TARGET))]
    assert created == VolumeCreated(
        "/srv/iscsi/luns/vol-1.raw", 1 << 30, CAPACITY, format="raw",
        export=IscsiTarget(portal="10.0.0.9:3260", target=TARGET, lun=1))


async def test_iscsi_root_volume_in_a_volume_group(ctx: JobContext,
                                                   agent: RecordingAgent) -> None:
    store = primary(ISCSI, {**ISCSI_CONFIG, "volume_group": "strata-vg",
                            "target_prefix": "iqn.2026-01.org.example"})
    backing = BackingFile(path="/srv/iscsi/imagecache/img-1", format="raw")
    await ISCSI_KVM.create_volume(ctx, store, volume(), SERVER, backing)
    assert agent.calls == [Call(SERVER.address, EXPORT_LUN, "job-1.export-lun", ExportLunPayload(
        dir="/srv/iscsi/luns", file_name="vol-1.raw", size=1 << 30, source=backing,
        target="iqn.2026-01.org.example:vol-1", volume_group="strata-vg"))]


async def test_iscsi_chap_credentials_are_new_per_volume(ctx: JobContext,
                                                         agent: RecordingAgent) -> None:
    store = primary(ISCSI, {**ISCSI_CONFIG, "chap": True})
    created = await ISCSI_KVM.create_volume(ctx, store, volume(), SERVER, None)
    await ISCSI_KVM.create_volume(ctx, store, volume(id="vol-2"), SERVER, None)
    first, second = (call.payload for call in agent.calls)
    assert isinstance(first, ExportLunPayload) and isinstance(second, ExportLunPayload)
    assert first.chap is not None and second.chap is not None
    assert first.chap.user == "strata-vol-1" and len(first.chap.password) == 16
    assert first.chap.password != second.chap.password
    assert first == ExportLunPayload(dir="/srv/iscsi/luns", file_name="vol-1.raw",
                                     size=1 << 30, target=TARGET, chap=first.chap)
    assert created.export is not None
    assert created.export.chap == ChapCredentials(user="strata-vol-1",
                                                  password=first.chap.password)


async def test_iscsi_delete_volume_and_cache(ctx: JobContext, agent: RecordingAgent) -> None:
    store = primary(ISCSI, {**ISCSI_CONFIG, "volume_group": "strata-vg"})
    assert await ISCSI_KVM.delete_volume(ctx, store, volume(), SERVER) == CAPACITY
    await ISCSI_KVM.delete_cache(ctx, store, cache("/srv/iscsi/imagecache/img-1"), SERVER)
    assert agent.calls == [
        Call(SERVER.address, UNEXPORT_LUN, "job-1.delete-vol-1", UnexportLunPayload(
            dir="/srv/iscsi/luns", file_name="vol-1.raw", target=TARGET,
            volume_group="strata-vg")),
        Call(SERVER.address, DELETE_FILE, "job-1.delete-cache-1",
             DeleteFilePayload(dir="/srv/iscsi/imagecache", file_name="img-1")),
    ]
