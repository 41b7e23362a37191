"""Live storage migration of one attached disk: a block copy into a destination volume
that exists already (`REUSE_EXT`: the controller had it made, on the destination's image
cache for a shallow copy of the top layer alone), a wait until the copy mirrors every
write, then the pivot. The destination is described by the same `<disk>` builder as an
attach, so `nfs://` (libnfs) volumes are copied to as QEMU would open them.

Until the pivot the domain runs on its source: a failure or a cancellation cancels the
copy (unless the pivot had landed already, which then counts as done), and the source is
never written by the copy. A repeat finds the domain on the destination, or the copy
still running, and carries on from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import libvirt

from agent.libvirt import disks
from agent.libvirt.attach import Attacher
from agent.libvirt.blockjobs import BlockJob, BlockJobs, Outcome
from agent.tools.libvirt import Libvirt
from shared.errors import Conflict, NotFound, StrataError, Unsupported
from shared.protocol.libvirt import LIVE_COPY, LiveCopied, LiveCopyPayload

_FLAGS = (libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
          # A persistent domain's copy job is not kept across a restart of the domain.
          | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB)
# The copy itself may take most of the command's time; ending it takes little.
_COPY_TIMEOUT = LIVE_COPY.timeout - 300
_END_TIMEOUT = 120.0


async def live_copy(lv: Libvirt, attacher: Attacher, payload: LiveCopyPayload,
                    bandwidth: int, progress: Callable[[float], None]) -> LiveCopied:
    dest = payload.dest
    if dest.path is None:
        raise Unsupported("a live copy goes to a file or an nfs:// URL, not an iSCSI LUN",
                          code="live_copy_not_supported")
    disk = disks.find_disk(await lv.domain_xml(payload.domain), payload.serial)
    if disk is None:
        raise NotFound(f"domain {payload.domain} has no disk of volume {payload.serial}",
                       code="disk_not_attached")
    target = disk.find("target")
    assert target is not None
    device, bus = str(target.get("dev")), target.get("bus", "virtio")
    chain = disks.chain_of(disk)
    if chain[:1] == [dest.path]:
        return LiveCopied(copied=0, seconds=0.0)
    if chain[:1] != [payload.source]:
        raise Conflict(f"the disk of volume {payload.serial} in domain {payload.domain} is "
                       f"{chain[0] if chain else 'empty'}, not {payload.source}",
                       code="chain_mismatch")
    jobs, job = BlockJobs(lv), BlockJob(payload.domain, device, leaves=payload.source)
    running = await lv.block_job_info(payload.domain, device)
    if running is not None and running.type != libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY:
        raise Conflict(f"disk {device} of domain {payload.domain} has another block job "
                       "running; try again once it ends", code="block_job_active")
    start = time.monotonic()
    if running is None:
        xml = disks.disk_xml(serial=payload.serial, device=device,
                             bus="scsi" if bus == "scsi" else "virtio",
                             chain=await attacher.chain(dest))
        flags = _FLAGS | (libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW if payload.shallow else 0)
        await lv.block_copy(payload.domain, device, xml, flags, bandwidth)
    copied = 0
    try:
        if await jobs.wait(job, timeout=_COPY_TIMEOUT, progress=progress) is Outcome.READY:
            info = await lv.block_job_info(payload.domain, device)
            copied = info.end if info is not None else 0
            await jobs.pivot(job, timeout=_END_TIMEOUT)
    except BaseException:
        try:
            landed = await jobs.abort(job, timeout=_END_TIMEOUT)
        except StrataError:
            landed = False
        if not landed:
            raise
    return LiveCopied(copied=copied, seconds=time.monotonic() - start)
