"""Hot-plugging volumes into libvirt domains on this host, unplugging them, and live
operations on their disks (snapshots, storage migration). The policy modules (and
libvirt-python with them) are imported by the first command that needs them: most hosts'
agents start without."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.commands.registry import handles
from agent.services import AgentServices
from shared.errors import Unsupported
from shared.protocol.libvirt import (
    ATTACH_VOLUME,
    DETACH_VOLUME,
    DOMAIN_INFO,
    LIVE_COMMIT,
    LIVE_COPY,
    LIVE_SNAPSHOT,
    AttachVolumePayload,
    AttachVolumeResult,
    DetachVolumePayload,
    DetachVolumeResult,
    DomainFacts,
    DomainPayload,
    LiveCommitFacts,
    LiveCommitPayload,
    LiveCopied,
    LiveCopyPayload,
    LiveSnapshotFacts,
    LiveSnapshotPayload,
)

if TYPE_CHECKING:
    from agent.libvirt.attach import Attacher
    from agent.tools.libvirt import Libvirt

Progress = Callable[[float], None]


def _libvirt(svc: AgentServices) -> Libvirt:
    if svc.libvirt is None:
        raise Unsupported("this agent has no libvirt connection", code="no_libvirt")
    return svc.libvirt


def _attacher(svc: AgentServices) -> Attacher:
    from agent.libvirt.attach import Attacher

    return Attacher(_libvirt(svc), svc.qemu_img, svc.initiator, svc.config.disk_bus)


@handles(ATTACH_VOLUME)
async def attach_volume(svc: AgentServices, payload: AttachVolumePayload,
                        progress: Progress) -> AttachVolumeResult:
    device = await _attacher(svc).attach(payload.domain, payload.serial, payload.source)
    return AttachVolumeResult(device=device)


@handles(DETACH_VOLUME)
async def detach_volume(svc: AgentServices, payload: DetachVolumePayload,
                        progress: Progress) -> DetachVolumeResult:
    existed = await _attacher(svc).detach(payload.domain, payload.serial, payload.source,
                                          payload.timeout)
    return DetachVolumeResult(existed=existed)


@handles(DOMAIN_INFO)
async def domain_info(svc: AgentServices, payload: DomainPayload,
                      progress: Progress) -> DomainFacts:
    import libvirt

    from agent.libvirt import disks

    states = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
              libvirt.VIR_DOMAIN_SHUTOFF: "shut off"}
    lv = _libvirt(svc)
    state, _, _ = await lv.domain_state(payload.domain)
    xml = await lv.domain_xml(payload.domain)
    return DomainFacts(state=states.get(state, "other"),  # type: ignore[arg-type]
                       disks=disks.disks_by_target(xml), tops=disks.tops_by_serial(xml))


@handles(LIVE_SNAPSHOT)
async def live_snapshot(svc: AgentServices, payload: LiveSnapshotPayload,
                        progress: Progress) -> LiveSnapshotFacts:
    from agent.libvirt.snapshots import take_live

    frozen = posixpath.join(payload.dir, payload.active)
    overlay = posixpath.join(payload.dir, payload.overlay)
    quiesced, seconds = await take_live(_libvirt(svc), payload.domain, payload.serial,
                                        frozen, overlay)
    # The frozen file is now a backing file: read-only to QEMU, so qemu-img may open it.
    info = await svc.qemu_img.info(frozen, fmt="qcow2")
    return LiveSnapshotFacts(path=overlay, snapshot_path=frozen,
                             actual_size=info.actual_size or 0, virtual_size=info.virtual_size,
                             capacity=await svc.files.for_path(payload.dir).capacity(payload.dir),
                             quiesced=quiesced, seconds=seconds)


@handles(LIVE_COMMIT)
async def live_commit(svc: AgentServices, payload: LiveCommitPayload,
                      progress: Progress) -> LiveCommitFacts:
    """The block commit (progress: its bytes), then `top`'s file goes: no image of the
    domain's uses it any more."""
    from agent.libvirt.snapshots import commit_live

    top = posixpath.join(payload.dir, payload.top)
    chain = await commit_live(_libvirt(svc), payload.domain, payload.serial,
                              posixpath.join(payload.dir, payload.base), top,
                              bandwidth=svc.config.block_job_bandwidth,
                              timeout=LIVE_COMMIT.timeout, progress=progress)
    files = svc.files.for_path(payload.dir)
    await files.remove(top)
    return LiveCommitFacts(path=chain[0], chain=chain,
                           capacity=await files.capacity(payload.dir))


@handles(LIVE_COPY)
async def live_copy_volume(svc: AgentServices, payload: LiveCopyPayload,
                           progress: Progress) -> LiveCopied:
    from agent.libvirt.migrate import live_copy

    return await live_copy(_libvirt(svc), _attacher(svc), payload,
                           svc.config.live_copy_bandwidth, progress)
