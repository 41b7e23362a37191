"""iSCSI commands: a storage server exports volumes as LUNs and grants initiators access;
a hypervisor connects to the LUNs it was granted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from agent import fsops
from agent.commands.registry import handles
from agent.iscsi.initiator import Initiator
from agent.iscsi.target import VOLUME_LUN, TargetDriver
from agent.lvm import Lvm
from agent.services import AgentServices
from shared.errors import Conflict, NotFound, Unsupported
from shared.protocol.files import BackingFile, DeleteFileResult
from shared.protocol.iscsi import (
    CONNECT_VOLUME,
    DISCONNECT_VOLUME,
    EXPORT_LUN,
    GRANT_LUN,
    REVOKE_LUN,
    UNEXPORT_LUN,
    ConnectVolumePayload,
    ConnectVolumeResult,
    ExportLunPayload,
    ExportLunResult,
    IscsiTarget,
    LunAccessPayload,
    LunAccessResult,
    UnexportLunPayload,
)
from shared.protocol.types import EmptyPayload, FsCapacity

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


def lv_name(file_name: str) -> str:
    return "strata-" + file_name.rsplit(".", 1)[0]


async def _export_block(svc: AgentServices, payload: ExportLunPayload, vg: str,
                        progress: Progress) -> tuple[str, FsCapacity]:
    """A logical volume: created, zeroed, and filled from `source` when given."""
    lvm = Lvm(svc.executor)
    lv = lv_name(payload.file_name)
    await lvm.capacity(vg)  # a clear NotFound before anything is made
    if await lvm.lv_exists(vg, lv):
        raise Conflict(f"logical volume {vg}/{lv} already exists; it is never overwritten")
    path = await lvm.create(vg, lv, payload.size)
    if payload.source is not None:
        try:
            await svc.qemu_img.convert(payload.source.path, path, src_fmt=payload.source.format,
                                       dest_fmt="raw", existing_target=True, progress=progress)
        except BaseException:
            await lvm.remove(vg, lv)
            raise
    return path, await lvm.capacity(vg)


@handles(EXPORT_LUN)
async def export_lun(svc: AgentServices, payload: ExportLunPayload,
                     progress: Progress) -> ExportLunResult:
    driver = _target_driver(svc)
    if payload.volume_group is not None:
        final, capacity = await _export_block(svc, payload, payload.volume_group, progress)
    else:
        final, capacity = await _export_file(svc, payload, progress)
    try:
        await driver.export(payload.target, final, payload.chap)
    except BaseException:
        await driver.unexport(payload.target)
        await _remove_backing(svc, payload.dir, payload.file_name, payload.volume_group)
        raise
    # No CHAP secret in the result: results are kept in the task log.
    return ExportLunResult(
        path=final, capacity=capacity,
        target=IscsiTarget(portal=svc.config.iscsi_portal, target=payload.target,
                           lun=VOLUME_LUN),
    )


async def _export_file(svc: AgentServices, payload: ExportLunPayload,
                       progress: Progress) -> tuple[str, FsCapacity]:
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
    return final, await asyncio.to_thread(fsops.capacity, payload.dir)


async def _remove_backing(svc: AgentServices, directory: str, file_name: str,
                          vg: str | None) -> tuple[bool, FsCapacity]:
    if vg is not None:
        lvm = Lvm(svc.executor)
        return await lvm.remove(vg, lv_name(file_name)), await lvm.capacity(vg)
    path = os.path.join(directory, file_name)
    existed = await asyncio.to_thread(os.path.lexists, path)
    await asyncio.to_thread(fsops.remove_quietly, path)
    return existed, await asyncio.to_thread(fsops.capacity, directory)


@handles(UNEXPORT_LUN)
async def unexport_lun(svc: AgentServices, payload: UnexportLunPayload,
                       progress: Progress) -> DeleteFileResult:
    """Removing the target drops every grant before the backing store goes."""
    await _target_driver(svc).unexport(payload.target)
    existed, capacity = await _remove_backing(svc, payload.dir, payload.file_name,
                                              payload.volume_group)
    return DeleteFileResult(existed=existed, capacity=capacity)


@handles(GRANT_LUN)
async def grant_lun(svc: AgentServices, payload: LunAccessPayload,
                    progress: Progress) -> LunAccessResult:
    initiators = await _target_driver(svc).grant(payload.target, payload.initiator)
    return LunAccessResult(target=payload.target, initiators=initiators)


@handles(REVOKE_LUN)
async def revoke_lun(svc: AgentServices, payload: LunAccessPayload,
                     progress: Progress) -> LunAccessResult:
    initiators = await _target_driver(svc).revoke(payload.target, payload.initiator)
    return LunAccessResult(target=payload.target, initiators=initiators)


@handles(CONNECT_VOLUME)
async def connect_volume(svc: AgentServices, payload: ConnectVolumePayload,
                         progress: Progress) -> ConnectVolumeResult:
    return await _initiator(svc).connect(payload.target)


@handles(DISCONNECT_VOLUME)
async def disconnect_volume(svc: AgentServices, payload: ConnectVolumePayload,
                            progress: Progress) -> EmptyPayload:
    await _initiator(svc).disconnect(payload.target)
    return EmptyPayload()
