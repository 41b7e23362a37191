"""Volumes: linked clones of an image cache, empty volumes, verified copies onto another
storage (migration), deletion. The same steps for a local or mounted directory and for an
NFS export through libnfs, whose `nfs://` URLs qemu-img opens directly."""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable, Iterable

from agent import fsops
from agent.clones import CloneKey
from agent.commands.registry import handles
from agent.files import FileStore
from agent.iscsi.backing import is_lun_source
from agent.services import AgentServices
from shared.errors import Conflict, InvalidInput, NotFound, OperationFailed
from shared.protocol.files import (
    DELETE_FILE,
    BackingFile,
    DeleteFilePayload,
    DeleteFileResult,
)
from shared.protocol.volumes import (
    COMPARE_VOLUMES,
    COPY_VOLUME,
    CREATE_VOLUME,
    RESIZE_VOLUME,
    CompareVolumesPayload,
    CopyVolumePayload,
    CreateVolumePayload,
    ResizeVolumePayload,
    VolumeFacts,
    VolumeResized,
    VolumesCompared,
)


async def new_file(svc: AgentServices, dest_dir: str, file_name: str,
                   inputs: Iterable[BackingFile | None]) -> tuple[FileStore, str]:
    """The store and final path of a volume file about to be made in `dest_dir` (made if
    missing), once it is sure that no file has that name yet and that every input
    exists."""
    files = svc.files.for_path(dest_dir)
    final = posixpath.join(dest_dir, file_name)
    if await files.lexists(final):
        raise Conflict(f"{final} already exists; a ready object is never overwritten")
    await require_files(svc, inputs)
    await files.makedirs(dest_dir)
    return files, final


async def require_files(svc: AgentServices, inputs: Iterable[BackingFile | None]) -> None:
    """A 404 naming the first of `inputs` (None entries skipped) that is not a file, nor
    the logical volume of a LUN (`is_lun_source`: a raw migration source)."""
    for needed in inputs:
        if needed is None or await asyncio.to_thread(is_lun_source, needed):
            continue
        if not await svc.files.for_path(needed.path).is_file(needed.path):
            raise NotFound(f"{needed.path} does not exist")


@handles(CREATE_VOLUME)
async def create_volume(
    svc: AgentServices, payload: CreateVolumePayload, progress: Callable[[float], None]
) -> VolumeFacts:
    if payload.backing is None and payload.size is None:
        raise InvalidInput("an empty volume needs a size")
    backing = payload.backing
    files, final = await new_file(svc, payload.dest_dir, payload.file_name, [backing])
    virtual_size = await svc.clones.create(files, final, CloneKey(
        backing=backing.path if backing else None,
        backing_fmt=backing.format if backing else None, size=payload.size))
    if virtual_size is None:
        virtual_size = (await svc.qemu_img.info(final, fmt="qcow2")).virtual_size
    return VolumeFacts(path=final, virtual_size=virtual_size,
                       capacity=await files.capacity(payload.dest_dir))


@handles(DELETE_FILE)
async def delete_file(
    svc: AgentServices, payload: DeleteFilePayload, progress: Callable[[float], None]
) -> DeleteFileResult:
    """Idempotent: a file that is already gone is a success, reported as such."""
    files = svc.files.for_path(payload.dir)
    existed = await files.remove(posixpath.join(payload.dir, payload.file_name))
    return DeleteFileResult(existed=existed, capacity=await files.capacity(payload.dir))


@handles(RESIZE_VOLUME)
async def resize_volume(
    svc: AgentServices, payload: ResizeVolumePayload, progress: Callable[[float], None]
) -> VolumeResized:
    """`qemu-img resize`: the qcow2 file gets a larger virtual size and, being thin, no
    blocks, so the storage needs no room for it now (the controller's capacity ledger
    holds the promise). Growing to the size it has is done; shrinking is refused."""
    files = svc.files.for_path(payload.dir)
    path = posixpath.join(payload.dir, payload.file_name)
    if not await files.is_file(path):
        raise NotFound(f"volume {path} does not exist")
    current = (await svc.qemu_img.info(path, fmt="qcow2")).virtual_size
    if payload.size < current:
        raise InvalidInput(f"volume {path} is {current} bytes; it is never shrunk to "
                           f"{payload.size}", code="volume_shrink")
    if payload.size > current:
        await svc.qemu_img.resize(path, payload.size, fmt="qcow2")
    return VolumeResized(path=path, virtual_size=payload.size,
                         capacity=await files.capacity(payload.dir))


@handles(COPY_VOLUME)
async def copy_volume(
    svc: AgentServices, payload: CopyVolumePayload, progress: Callable[[float], None]
) -> VolumeFacts:
    """A volume's copy on another storage (a migration): converted under a temporary name,
    compared with the source, then published without overwriting. The source is only
    read, so a copy cut short leaves it as it was, and a temporary the sweep removes."""
    source, backing, fmt = payload.source, payload.backing, payload.format
    files, final = await new_file(svc, payload.dest_dir, payload.file_name, [source, backing])
    tmp = fsops.temp_path(payload.dest_dir, payload.file_name)
    try:
        await svc.qemu_img.convert(
            source.path, tmp, src_fmt=source.format, dest_fmt=fmt,
            backing=backing.path if backing else None,
            backing_fmt=backing.format if backing else None,
            progress=lambda pct: progress(pct * 0.8))
        if not await svc.qemu_img.compare(source.path, tmp, first_fmt=source.format,
                                          second_fmt=fmt):
            raise OperationFailed(f"the copy of {source.path} differs from it",
                                  code="copy_mismatch")
        await files.publish(tmp, final)
    finally:
        await files.remove(tmp)
    info = await svc.qemu_img.info(final, fmt=fmt)
    return VolumeFacts(path=final, virtual_size=info.virtual_size,
                       capacity=await files.capacity(payload.dest_dir))


@handles(COMPARE_VOLUMES)
async def compare_volumes(
    svc: AgentServices, payload: CompareVolumesPayload, progress: Callable[[float], None]
) -> VolumesCompared:
    """The check of a copy another command made (a LUN filled from a volume)."""
    first, second = payload.first, payload.second
    await require_files(svc, (first, second))
    return VolumesCompared(same=await svc.qemu_img.compare(
        first.path, second.path, first_fmt=first.format, second_fmt=second.format))
