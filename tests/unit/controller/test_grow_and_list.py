"""Growing volumes through each primary storage type's KVM backend, and `list_objects`
of every primary and backup type: the exact command, task and payload each sends."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.jobs.engine import JobContext
from controller.plugins.dir.provider import DIR
from controller.plugins.interfaces.backend import VolumeGrown
from controller.plugins.iscsi.kvm import ISCSI_KVM
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.provider import LOCAL
from controller.plugins.nfs.provider import NFS
from controller.plugins.s3.provider import S3
from controller.plugins.sftp.provider import SFTP
from shared.protocol.command import Command
from shared.protocol.iscsi import RESIZE_LUN, LunResized, ResizeLunPayload
from shared.protocol.objects import (
    LIST_OBJECTS,
    ListObjectsPayload,
    ObjectDir,
    ObjectList,
    StoreObject,
)
from shared.protocol.s3 import S3_LIST, S3Endpoint, S3ListPayload
from shared.protocol.sftp import SFTP_LIST, SftpListPayload
from shared.protocol.types import Model
from shared.protocol.volumes import RESIZE_VOLUME, ResizeVolumePayload, VolumeResized
from tests.unit.controller.fakes import (
    CAPACITY,
    NFS_SERVER,
    S3_CONFIG,
    SFTP_CONFIG,
    SFTP_ENDPOINT,
    Call,
    RecordingAgent,
    backup,
    host,
    primary,
    volume,
)
from tests.unit.controller.test_backends import FILE_STORES, ISCSI_CONFIG, SERVER, TARGET

HOST = host()
LISTED = ObjectList(objects=[StoreObject(path="volumes/vol-1.qcow2", kind="volume",
                                         size=1 << 20, virtual_size=1 << 30, format="qcow2")],
                    capacity=CAPACITY)
FILE_DIRS = [ObjectDir(subdir="volumes", kind="volume"),
             ObjectDir(subdir="imagecache", kind="cache")]
IMAGES = [ObjectDir(subdir="images", kind="image"),
          ObjectDir(subdir="snapshots", kind="snapshot")]


@pytest.fixture
def answers(agent: RecordingAgent) -> RecordingAgent:
    agent.answers["resize_volume"] = lambda p: VolumeResized(
        path=f"{p.dir}/{p.file_name}", virtual_size=p.size, capacity=CAPACITY)
    agent.answers["resize_lun"] = lambda p: LunResized(
        path=f"{p.dir}/{p.file_name}", size=p.size + (4 << 20), capacity=CAPACITY)
    for name in ("list_objects", "sftp_list", "s3_list"):
        agent.answers[name] = lambda p: LISTED
    return agent


@pytest.fixture
async def iscsi_server(db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as session:
        session.add(host("storage-1"))


@pytest.mark.parametrize("kind", FILE_STORES)
async def test_grow_a_qcow2_volume(kind: str, ctx: JobContext, answers: RecordingAgent) -> None:
    """The active layer the row records is grown: after a snapshot it is an overlay."""
    backend, store, volumes, _ = FILE_STORES[kind]
    active = volume(path=f"{volumes}/vol-1.3f2a.qcow2")
    grown = await backend.resize_volume(ctx, store, active, HOST, 2 << 30)
    assert answers.calls == [Call(HOST.address, RESIZE_VOLUME, "job-1.resize-volume",
                                  ResizeVolumePayload(dir=volumes, file_name="vol-1.3f2a.qcow2",
                                                      size=2 << 30))]
    assert grown == VolumeGrown(2 << 30, CAPACITY)


@pytest.mark.parametrize("vg", [None, "vg-san"])
async def test_grow_a_lun_on_its_server(vg: str | None, ctx: JobContext,
                                        answers: RecordingAgent) -> None:
    store = primary(ISCSI, {**ISCSI_CONFIG, "volume_group": vg})
    grown = await ISCSI_KVM.resize_volume(ctx, store, volume(), SERVER, 2 << 30)
    assert answers.calls == [Call(SERVER.address, RESIZE_LUN, "job-1.resize-lun",
                                  ResizeLunPayload(dir="/srv/iscsi/luns",
                                                   file_name="vol-1.raw", target=TARGET,
                                                   size=2 << 30, volume_group=vg))]
    assert grown == VolumeGrown((2 << 30) + (4 << 20), CAPACITY), "LVM rounds up"


FILE_PRIMARIES: dict[str, tuple[Any, str]] = {
    "local": (primary(LOCAL, {"path": "/srv/local"}), "/srv/local"),
    "nfs-mount": (primary(NFS, NFS_SERVER), "/var/lib/strata/mnt/ps-1"),
    "nfs-libnfs": (primary(NFS, {**NFS_SERVER, "mode": "libnfs"}),
                   "nfs://nfs.example/exports/strata"),
}


@pytest.mark.parametrize("kind", FILE_PRIMARIES)
async def test_list_a_file_primary_storage(kind: str, ctx: JobContext,
                                           answers: RecordingAgent) -> None:
    store, root = FILE_PRIMARIES[kind]
    driver = (LOCAL if kind == "local" else NFS).driver
    assert await driver.list_objects(ctx, store, HOST) == LISTED
    assert answers.calls == [Call(HOST.address, LIST_OBJECTS, "job-1.list-ps-1",
                                  ListObjectsPayload(root=root, dirs=FILE_DIRS))]


@pytest.mark.usefixtures("iscsi_server")
async def test_list_an_iscsi_storage_on_its_server(ctx: JobContext,
                                                   answers: RecordingAgent) -> None:
    store = primary(ISCSI, {**ISCSI_CONFIG, "volume_group": "vg-san"})
    await ISCSI.driver.list_objects(ctx, store, HOST)
    assert answers.calls == [Call(SERVER.address, LIST_OBJECTS, "job-1.list-ps-1",
                                  ListObjectsPayload(
                                      root="/srv/iscsi", volume_group="vg-san",
                                      dirs=[ObjectDir(subdir="luns", kind="volume"),
                                            ObjectDir(subdir="imagecache", kind="cache"),
                                            ObjectDir(subdir="snapshots", kind="snapshot")]))]


def _sent(agent: RecordingAgent) -> tuple[Command[Any, Any], Model]:
    (call,) = agent.calls
    assert (call.address, call.task_id) == (HOST.address, "job-1.list-bs-1")
    return call.command, call.payload


async def test_list_backup_stores(ctx: JobContext, answers: RecordingAgent) -> None:
    await DIR.driver.list_objects(ctx, backup(DIR, {"path": "/srv/images"}), HOST)
    assert _sent(answers) == (LIST_OBJECTS, ListObjectsPayload(root="/srv/images",
                                                               dirs=IMAGES))
    answers.calls.clear()
    await SFTP.driver.list_objects(ctx, backup(SFTP, SFTP_CONFIG), HOST)
    assert _sent(answers) == (SFTP_LIST, SftpListPayload(endpoint=SFTP_ENDPOINT,
                                                         root="/srv/sftp", dirs=IMAGES))
    answers.calls.clear()
    await S3.driver.list_objects(ctx, backup(S3, S3_CONFIG), HOST)
    command, payload = _sent(answers)
    assert command is S3_LIST and isinstance(payload, S3ListPayload)
    assert payload.prefix == "strata/" and payload.dirs == IMAGES
    assert payload.endpoint == S3Endpoint(**{**S3_CONFIG}), "the secret opened for the agent"
