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
from controller.plugins.interfaces.backup import SNAPSHOTS
from controller.plugins.interfaces.mediator import (
    Cell,
    DownloadRequest,
    RestoreRequest,
    Uploaded,
    UploadRequest,
)
from controller.plugins.interfaces.stores import Backup
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.provider import LOCAL
from controller.plugins.matrix import CELLS, default_registry
from controller.plugins.nfs.provider import NFS
from controller.plugins.s3.provider import S3
from controller.plugins.sftp.provider import SFTP
from shared.protocol.command import Command
from shared.protocol.files import COPY_IMAGE, ChunkManifest, CopyImagePayload
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
MANIFEST = ChunkManifest(chunk_size=64 << 20, chunks=["c" * 64])
# Where each backup type keeps image img-1.
STORED = {"dir": "/srv/images/images/img-1", "sftp": "/srv/sftp/images/img-1",
          "s3": "strata/images/img-1"}


def expected_download(backup_type: str, cache_dir: str,
                      manifest: ChunkManifest | None = None) -> tuple[Command[Any, Any], Model]:
    target = {"dest_dir": cache_dir, "file_name": "img-1", "expected_sha256": SHA,
              "expected_format": "qcow2", "manifest": manifest}
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
async def test_a_download_is_checked_against_the_image_manifest(
        cell: Cell, ctx: JobContext, agent: RecordingAgent) -> None:
    store, cache_dir, _, backup_store = stores(cell)
    request = DownloadRequest(image=image(), ref=store_ref(STORED[cell.backup.type]),
                              backup=backup_store, primary=store,
                              cache=cache(f"{cache_dir}/img-1"), host=HOST,
                              task_id="cache-cache-1-1", manifest=MANIFEST)
    await MediatorMotionStrategy(default_registry()).download(ctx, request)
    command, payload = expected_download(cell.backup.type, cache_dir, MANIFEST)
    assert agent.calls == [Call(HOST.address, command, "cache-cache-1-1", payload)]


@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
async def test_an_upload_brings_back_the_manifest_made_as_it_was_sent(
        cell: Cell, ctx: JobContext, agent: RecordingAgent) -> None:
    store, _, volume_path, backup_store = stores(cell)
    name = {"dir": "copy_image", "sftp": "sftp_upload", "s3": "s3_upload"}[cell.backup.type]
    answer = agent.answers[name]
    agent.answers[name] = lambda p: answer(p).model_copy(update={"manifest": MANIFEST})
    uploaded = await MediatorMotionStrategy(default_registry()).upload(ctx, UploadRequest(
        volume=volume(path=volume_path), primary=store, backup=backup_store, host=HOST,
        file_name="img-2", task_id="job-1.upload"))
    assert uploaded.manifest == MANIFEST


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


# Where each backup type keeps the backup of snapshot snap-1 of volume vol-1.
SNAPSHOT_STORED = {"dir": "/srv/images/snapshots/vol-1.snap-1.qcow2",
                   "sftp": "/srv/sftp/snapshots/vol-1.snap-1.qcow2",
                   "s3": "strata/snapshots/vol-1.snap-1.qcow2"}


@pytest.mark.parametrize("cell", [c for c in CELLS if c.primary.type != "iscsi"], ids=cell_id)
async def test_upload_of_a_snapshot_flattens_it_into_the_snapshots_folder(
        cell: Cell, ctx: JobContext, agent: RecordingAgent) -> None:
    store, _, volume_path, backup_store = stores(cell)
    layer = volume_path.replace("vol-1.qcow2", "vol-1.abc.qcow2")
    request = UploadRequest(volume=volume(path=volume_path), primary=store, backup=backup_store,
                            host=HOST, file_name="vol-1.snap-1.qcow2",
                            task_id="job-1.upload", source=layer, flatten=True,
                            folder=SNAPSHOTS)
    await MediatorMotionStrategy(default_registry()).upload(ctx, request)
    stored = SNAPSHOT_STORED[cell.backup.type]
    expected: Model
    if cell.backup.type == "dir":
        expected = CopyImagePayload(src_path=layer, dest_dir="/srv/images/snapshots",
                                    file_name="vol-1.snap-1.qcow2", flatten=True)
    elif cell.backup.type == "sftp":
        expected = SftpUploadPayload(endpoint=SFTP_ENDPOINT, local_path=layer,
                                     remote_dir="/srv/sftp/snapshots",
                                     file_name="vol-1.snap-1.qcow2", flatten=True)
    else:
        expected = S3UploadPayload(endpoint=S3_ENDPOINT, local_path=layer, key=stored,
                                   flatten=True)
    assert [c.payload for c in agent.calls] == [expected]


@pytest.mark.parametrize("cell", [c for c in CELLS if c.primary.type != "iscsi"], ids=cell_id)
async def test_restore_of_a_backup_into_a_volume_directory(
        cell: Cell, ctx: JobContext, agent: RecordingAgent) -> None:
    store, _, volume_path, backup_store = stores(cell)
    directory = volume_path.rsplit("/", 1)[0]
    request = RestoreRequest(backup=backup_store, primary=store,
                             source=SNAPSHOT_STORED[cell.backup.type], sha256=SHA,
                             format="qcow2", dest_dir=directory,
                             file_name="vol-2.restored.qcow2", host=HOST,
                             task_id="job-2.restore")
    strategy = MediatorMotionStrategy(default_registry())
    assert strategy.bid_restore(request) == MEDIATOR_BID
    await strategy.restore(ctx, request)
    target = {"dest_dir": directory, "file_name": "vol-2.restored.qcow2",
              "expected_sha256": SHA, "expected_format": "qcow2"}
    source = SNAPSHOT_STORED[cell.backup.type]
    command: Command[Any, Any]
    expected: Model
    if cell.backup.type == "dir":
        command, expected = COPY_IMAGE, CopyImagePayload(src_path=source, **target)
    elif cell.backup.type == "sftp":
        command, expected = SFTP_DOWNLOAD, SftpDownloadPayload(
            endpoint=SFTP_ENDPOINT, remote_path=source, **target)
    else:
        command, expected = S3_DOWNLOAD, S3DownloadPayload(endpoint=S3_ENDPOINT, key=source,
                                                           **target)
    assert agent.calls == [Call(HOST.address, command, "job-2.restore", expected)]


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
