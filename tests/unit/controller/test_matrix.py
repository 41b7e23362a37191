"""Every cell of the matrix, both ways: the exact command, task and payload that the
mediator strategy sends for a download into each primary type's image cache and for an
upload of each primary type's volume, for each backup type; and the capabilities
document generated from the cell table."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api.schemas import Capabilities
from controller.jobs.engine import JobContext
from controller.motion.strategies import MEDIATOR_BID, MediatorMotionStrategy
from controller.plugins.dir.provider import DIR
from controller.plugins.interfaces.mediator import Cell, DownloadRequest, Uploaded, UploadRequest
from controller.plugins.interfaces.stores import Backup
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.provider import LOCAL
from controller.plugins.matrix import CELLS, default_registry
from controller.plugins.nfs.provider import NFS
from controller.plugins.s3.provider import S3
from controller.plugins.sftp.provider import SFTP
from shared.protocol.command import Command
from shared.protocol.files import COPY_IMAGE, CopyImagePayload
from shared.protocol.s3 import (
    S3_DOWNLOAD,
    S3_UPLOAD,
    S3DownloadPayload,
    S3UploadPayload,
)
from shared.protocol.sftp import (
    SFTP_DOWNLOAD,
    SFTP_UPLOAD,
    SftpDownloadPayload,
    SftpUploadPayload,
)
from shared.protocol.types import Model
from tests.unit.controller.fakes import (
    S3_CONFIG,
    S3_ENDPOINT,
    SFTP_CONFIG,
    SFTP_ENDPOINT,
    SHA,
    Call,
    RecordingAgent,
    backup,
    cache,
    host,
    image,
    primary,
    store_ref,
    volume,
)

HOST = host()
# Each primary type: a store, where its image cache is, and where a volume of it is.
PRIMARIES = {
    "local": (primary(LOCAL, {"path": "/srv/local"}), "/srv/local/imagecache",
              "/srv/local/volumes/vol-1.qcow2"),
    "nfs": (primary(NFS, {"server": "nfs.example", "export": "/exports/strata"}),
            "/var/lib/strata/mnt/ps-1/imagecache", "/var/lib/strata/mnt/ps-1/volumes/vol-1.qcow2"),
    "iscsi": (primary(ISCSI, {"server_host_id": "host-storage-1", "path": "/srv/iscsi",
                              "portal": "10.0.0.9:3260"}),
              "/srv/iscsi/imagecache", "/srv/iscsi/luns/vol-1.raw"),
}
BACKUPS = {"dir": backup(DIR, {"path": "/srv/images"}), "sftp": backup(SFTP, SFTP_CONFIG),
           "s3": backup(S3, S3_CONFIG)}
# Where each backup type keeps image img-1.
STORED = {"dir": "/srv/images/images/img-1", "sftp": "/srv/sftp/images/img-1",
          "s3": "strata/images/img-1"}


def expected_download(backup_type: str, cache_dir: str) -> tuple[Command[Any, Any], Model]:
    target = {"dest_dir": cache_dir, "file_name": "img-1", "expected_sha256": SHA,
              "expected_format": "qcow2"}
    source = STORED[backup_type]
    if backup_type == "dir":
        return COPY_IMAGE, CopyImagePayload(src_path=source, **target)
    if backup_type == "sftp":
        return SFTP_DOWNLOAD, SftpDownloadPayload(endpoint=SFTP_ENDPOINT, remote_path=source,
                                                  **target)
    return S3_DOWNLOAD, S3DownloadPayload(endpoint=S3_ENDPOINT, key=source, **target)


def expected_upload(backup_type: str, volume_path: str) -> tuple[Command[Any, Any], Model]:
    if backup_type == "dir":
        return COPY_IMAGE, CopyImagePayload(src_path=volume_path, dest_dir="/srv/images/images",
                                            file_name="img-2")
    if backup_type == "sftp":
        return SFTP_UPLOAD, SftpUploadPayload(endpoint=SFTP_ENDPOINT, local_path=volume_path,
                                              remote_dir="/srv/sftp/images", file_name="img-2")
    return S3_UPLOAD, S3UploadPayload(endpoint=S3_ENDPOINT, local_path=volume_path,
                                      key="strata/images/img-2")


def cell_id(cell: Cell) -> str:
    return "-".join(cell.key)


def stores(cell: Cell) -> tuple[Any, str, str, Backup[Any]]:
    store, cache_dir, volume_path = PRIMARIES[cell.primary.type]
    return store, cache_dir, volume_path, BACKUPS[cell.backup.type]


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
async def test_download_into_the_image_cache(cell: Cell, ctx: JobContext,
                                             agent: RecordingAgent) -> None:
    store, cache_dir, _, backup_store = stores(cell)
    request = DownloadRequest(image=image(), ref=store_ref(STORED[cell.backup.type]),
                              backup=backup_store, primary=store,
                              cache=cache(f"{cache_dir}/img-1"), host=HOST,
                              task_id="cache-cache-1-1")
    strategy = MediatorMotionStrategy(default_registry())
    assert strategy.bid_download(request) == MEDIATOR_BID
    facts = await strategy.download(ctx, request)
    command, payload = expected_download(cell.backup.type, cache_dir)
    assert agent.calls == [Call(HOST.address, command, "cache-cache-1-1", payload)]
    assert facts.path == f"{cache_dir}/img-1"


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
async def test_upload_of_a_volume(cell: Cell, ctx: JobContext, agent: RecordingAgent) -> None:
    store, _, volume_path, backup_store = stores(cell)
    request = UploadRequest(volume=volume(path=volume_path), primary=store, backup=backup_store,
                            host=HOST, file_name="img-2", task_id="job-1.upload")
    strategy = MediatorMotionStrategy(default_registry())
    assert strategy.bid_upload(request) == MEDIATOR_BID
    uploaded = await strategy.upload(ctx, request)
    command, payload = expected_upload(cell.backup.type, volume_path)
    assert agent.calls == [Call(HOST.address, command, "job-1.upload", payload)]
    assert isinstance(uploaded, Uploaded) and uploaded.sha256 == SHA


async def test_libnfs_cells_use_the_export_url(ctx: JobContext, agent: RecordingAgent) -> None:
    store = primary(NFS, {"server": "nfs.example", "export": "/exports/strata",
                          "mode": "libnfs"})
    request = DownloadRequest(image=image(), ref=store_ref(STORED["dir"]), backup=BACKUPS["dir"],
                              primary=store, cache=cache("unused"), host=HOST, task_id="t")
    await MediatorMotionStrategy(default_registry()).download(ctx, request)
    command, payload = expected_download("dir", "nfs://nfs.example/exports/strata/imagecache")
    assert agent.calls == [Call(HOST.address, command, "t", payload)]


def test_the_table_has_one_named_cell_per_combination() -> None:
    assert len(CELLS) == 9
    assert {cell.key for cell in CELLS} == {
        (p, b, "kvm") for p in ("local", "nfs", "iscsi") for b in ("dir", "sftp", "s3")}
    for cell in CELLS:
        p, b = cell.primary.type, cell.backup.type
        assert cell.download.startswith(f"{b} → {p} "), "names read the way the data go"
        assert cell.upload.startswith(f"{p} volume → {b}")


def test_capabilities_list_exactly_the_tables_cells() -> None:
    caps = Capabilities.model_validate(default_registry().capabilities())
    assert [(c.primary, c.backup, c.hypervisor) for c in caps.matrix] == sorted(
        cell.key for cell in CELLS)
    assert all(c.directions == ["download", "upload"] for c in caps.matrix)
    assert [(b.primary, b.hypervisor) for b in caps.backends] == [
        ("iscsi", "kvm"), ("local", "kvm"), ("nfs", "kvm")]
    assert [t.type for t in caps.primary_storage_types] == ["iscsi", "local", "nfs"]
    assert [t.type for t in caps.backup_storage_types] == ["dir", "s3", "sftp"]
