"""iSCSI commands: a storage server exports volumes as LUNs and grants initiators access;
a hypervisor connects to the LUNs it was granted."""

from __future__ import annotations

from collections.abc import Callable

from agent.commands.registry import handles
from agent.iscsi import luns
from agent.iscsi.backing import Backing, backing_for
from agent.iscsi.initiator import Initiator
from agent.iscsi.target import VOLUME_LUN, TargetDriver
from agent.services import AgentServices
from shared.errors import Unsupported
from shared.protocol.files import DeleteFileResult
from shared.protocol.iscsi import (
    CONNECT_VOLUME,
    DELETE_LUN_SNAPSHOT,
    DISCONNECT_VOLUME,
    EXPORT_LUN,
    GRANT_LUN,
    RESIZE_LUN,
    REVERT_LUN,
    REVOKE_LUN,
    SNAPSHOT_LUN,
    UNEXPORT_LUN,
    ConnectVolumePayload,
    ConnectVolumeResult,
    DeleteLunSnapshotPayload,
    ExportLunPayload,
    ExportLunResult,
    IscsiTarget,
    LunAccessPayload,
    LunAccessResult,
    LunResized,
    LunReverted,
    LunSnapshotFacts,
    LunSnapshotPayload,
    ResizeLunPayload,
    RevertLunPayload,
    UnexportLunPayload,
)
from shared.protocol.types import EmptyPayload

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


def _backing(svc: AgentServices, directory: str, volume_group: str | None) -> Backing:
    return backing_for(directory, volume_group, svc.executor, svc.qemu_img)


@handles(EXPORT_LUN)
async def export_lun(svc: AgentServices, payload: ExportLunPayload,
                     progress: Progress) -> ExportLunResult:
    path, capacity = await luns.export(
        _target_driver(svc), _backing(svc, payload.dir, payload.volume_group), payload, progress)
    # No CHAP secret in the result: results are kept in the task log.
    return ExportLunResult(
        path=path, capacity=capacity,
        target=IscsiTarget(portal=svc.config.iscsi_portal, target=payload.target,
                           lun=VOLUME_LUN),
    )


@handles(UNEXPORT_LUN)
async def unexport_lun(svc: AgentServices, payload: UnexportLunPayload,
                       progress: Progress) -> DeleteFileResult:
    existed, capacity = await luns.unexport(
        _target_driver(svc), _backing(svc, payload.dir, payload.volume_group),
        payload.target, payload.file_name)
    return DeleteFileResult(existed=existed, capacity=capacity)


@handles(RESIZE_LUN)
async def resize_lun(svc: AgentServices, payload: ResizeLunPayload,
                     progress: Progress) -> LunResized:
    path, size, capacity = await luns.resize(
        _target_driver(svc), _backing(svc, payload.dir, payload.volume_group),
        payload.target, payload.file_name, payload.size)
    return LunResized(path=path, size=size, capacity=capacity)


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


# ---- snapshots of a LUN's backing store: reflink or sparse copies of a file, LVM
# snapshots of a logical volume. The controller names them (one name per snapshot),
# which makes every command safe to repeat.


@handles(SNAPSHOT_LUN)
async def snapshot_lun(svc: AgentServices, payload: LunSnapshotPayload,
                       progress: Progress) -> LunSnapshotFacts:
    """The LUN stays served; the snapshot is a point in time of a LUN no VM writes to
    meanwhile (a reflink is one even under writes, a plain copy is not)."""
    backing = _backing(svc, payload.dir, payload.volume_group)
    snap = await backing.snapshot(payload.file_name, payload.snapshot_dir,
                                  payload.snapshot_name)
    return LunSnapshotFacts(path=snap.path, size=snap.size, method=snap.method,
                            capacity=await backing.capacity())


@handles(REVERT_LUN)
async def revert_lun(svc: AgentServices, payload: RevertLunPayload,
                     progress: Progress) -> LunReverted:
    path, size, capacity = await luns.revert(
        _target_driver(svc), _backing(svc, payload.dir, payload.volume_group),
        payload.target, payload.file_name, payload.snapshot_dir, payload.snapshot_name)
    return LunReverted(path=path, size=size, capacity=capacity)


@handles(DELETE_LUN_SNAPSHOT)
async def delete_lun_snapshot(svc: AgentServices, payload: DeleteLunSnapshotPayload,
                              progress: Progress) -> DeleteFileResult:
    backing = _backing(svc, payload.dir, payload.volume_group)
    existed = await backing.delete_snapshot(payload.snapshot_dir, payload.snapshot_name)
    return DeleteFileResult(existed=existed, capacity=await backing.capacity())
