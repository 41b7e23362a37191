"""iSCSI commands: a storage server exports volumes as LUNs and grants initiators access;
a hypervisor connects to the LUNs it was granted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from agent import fsops
from agent.iscsi.initiator import Initiator
from agent.iscsi.target import VOLUME_LUN, TargetDriver
from agent.services import AgentServices
from shared.errors import Conflict, NotFound, Unsupported
from shared.protocol import (
    BackingFile,
    ConnectVolumePayload,
    ConnectVolumeResult,
    DeleteFileResult,
    EmptyPayload,
    ExportLunPayload,
    ExportLunResult,
    IscsiTarget,
    LunAccessPayload,
    LunAccessResult,
    UnexportLunPayload,
)

Progress = Callable[[float], None]


def _target_driver(svc: AgentServices) -> TargetDriver:
    if svc.target_driver is None:
        raise Unsupported("this agent is not an iSCSI storage server (set iscsi_target)",
                          code="no_target_role")
    return svc.target_driver


def _initiator(svc: AgentServices) -> Initiator:
    if svc.initiator is None:
        raise Unsupported("this host has no iSCSI initiator name (set initiator_iqn)",
                          code="no_initiator")
    return svc.initiator


def _create_empty(path: str, size: int) -> None:
    """A sparse raw file: no blocks are allocated until written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


async def _copy_from(svc: AgentServices, source: BackingFile, tmp: str, size: int,
                     progress: Progress) -> None:
    """As cheap a copy as the filesystem allows: a reflink of a raw cache (a plain sparse
    copy where reflinks are not supported), else a sparse qemu-img convert to raw."""
    if source.format == "raw":
        await svc.executor.run(["cp", "--reflink=auto", "--sparse=always", source.path, tmp],
                               timeout=3600)
    else:
        await svc.qemu_img.convert(source.path, tmp, src_fmt=source.format, dest_fmt="raw",
                                   progress=progress)
    if await asyncio.to_thread(os.path.getsize, tmp) < size:
        await svc.qemu_img.resize(tmp, size, fmt="raw")


async def export_lun(svc: AgentServices, payload: ExportLunPayload,
                     progress: Progress) -> ExportLunResult:
    driver = _target_driver(svc)
    final = os.path.join(payload.dir, payload.file_name)
    if await asyncio.to_thread(os.path.lexists, final):
        raise Conflict(f"{final} already exists; a ready object is never overwritten")
    await asyncio.to_thread(os.makedirs, payload.dir, exist_ok=True)
    tmp = fsops.temp_path(payload.dir, payload.file_name)
    try:
        if payload.source is None:
            await asyncio.to_thread(_create_empty, tmp, payload.size)
        elif not await asyncio.to_thread(os.path.isfile, payload.source.path):
            raise NotFound(f"source {payload.source.path} does not exist")
        else:
            await _copy_from(svc, payload.source, tmp, payload.size, progress)
        await asyncio.to_thread(fsops.publish, tmp, final)
    finally:
        await asyncio.to_thread(fsops.remove_quietly, tmp)
    try:
        await driver.export(payload.target, final, payload.chap)
    except BaseException:
        await driver.unexport(payload.target)
        await asyncio.to_thread(fsops.remove_quietly, final)
        raise
    return ExportLunResult(
        path=final, capacity=await asyncio.to_thread(fsops.capacity, payload.dir),
        target=IscsiTarget(portal=svc.config.iscsi_portal, target=payload.target,
                           lun=VOLUME_LUN, chap=payload.chap),
    )


async def unexport_lun(svc: AgentServices, payload: UnexportLunPayload,
                       progress: Progress) -> DeleteFileResult:
    """Removing the target drops every grant before the file goes."""
    await _target_driver(svc).unexport(payload.target)
    path = os.path.join(payload.dir, payload.file_name)
    existed = await asyncio.to_thread(os.path.lexists, path)
    await asyncio.to_thread(fsops.remove_quietly, path)
    return DeleteFileResult(existed=existed,
                            capacity=await asyncio.to_thread(fsops.capacity, payload.dir))


async def grant_lun(svc: AgentServices, payload: LunAccessPayload,
                    progress: Progress) -> LunAccessResult:
    initiators = await _target_driver(svc).grant(payload.target, payload.initiator)
    return LunAccessResult(target=payload.target, initiators=initiators)


async def revoke_lun(svc: AgentServices, payload: LunAccessPayload,
                     progress: Progress) -> LunAccessResult:
    initiators = await _target_driver(svc).revoke(payload.target, payload.initiator)
    return LunAccessResult(target=payload.target, initiators=initiators)


async def connect_volume(svc: AgentServices, payload: ConnectVolumePayload,
                         progress: Progress) -> ConnectVolumeResult:
    return await _initiator(svc).connect(payload.target)


async def disconnect_volume(svc: AgentServices, payload: ConnectVolumePayload,
                            progress: Progress) -> EmptyPayload:
    await _initiator(svc).disconnect(payload.target)
    return EmptyPayload()
