"""Live snapshots of an attached volume: an external, disk-only snapshot of its one disk
(`DISK_ONLY | NO_METADATA | ATOMIC`), the same chain shape as an offline snapshot, so
both kinds join one tree. Quiesced through the guest agent when the domain has one (a
guest agent that does not answer gives a crash-consistent snapshot, reported as such).

Their live delete is a block commit of the layer above the snapshot's file into it:
intermediate for a backing file, active with a pivot for the disk's top.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt

from agent.libvirt import disks
from agent.libvirt.blockjobs import BlockJob, BlockJobs, Outcome, Progress
from agent.libvirt.disks import Layer
from agent.tools.libvirt import Libvirt, LibvirtFailed
from shared.errors import Conflict, NotFound

GUEST_AGENT = "org.qemu.guest_agent.0"
_FLAGS = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
          | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
          | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)


_COMMITS = frozenset({libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT,
                      libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT})


def _attached(domain_xml: str, domain: str, serial: str) -> ET.Element:
    disk = disks.find_disk(domain_xml, serial)
    if disk is None:
        raise NotFound(f"domain {domain} has no disk of volume {serial}",
                       code="disk_not_attached")
    return disk


def snapshot_xml(device: str, overlay: str, others: list[str]) -> str:
    """`overlay` for `device`; every other disk of the domain left out."""
    snap = ET.Element("domainsnapshot")
    listed = ET.SubElement(snap, "disks")
    disk = ET.SubElement(listed, "disk", name=device, snapshot="external")
    ET.SubElement(disk, "driver", type="qcow2")
    disks.set_source(disk, Layer(overlay, "qcow2"))
    for other in others:
        ET.SubElement(listed, "disk", name=other, snapshot="no")
    return ET.tostring(snap, encoding="unicode")


def has_guest_agent(domain_xml: str) -> bool:
    return any(target.get("name") == GUEST_AGENT
               for target in disks.parse(domain_xml).iterfind("devices/channel/target"))


async def take_live(lv: Libvirt, domain: str, serial: str, active: str,
                    overlay: str) -> tuple[bool, float]:
    """(quiesced, seconds). Done already when the disk's top is `overlay` (a repeat)."""
    live = await lv.domain_xml(domain)
    disk = _attached(live, domain, serial)
    current = disks.source_path(disk)
    if current == overlay:
        return False, 0.0
    if current != active:
        raise Conflict(f"the disk of volume {serial} in domain {domain} is {current}, not "
                       f"{active}", code="chain_mismatch")
    device = str(disk.find("target").get("dev"))  # type: ignore[union-attr]
    others = [d for d in disks.disks_by_target(live) if d != device]
    xml = snapshot_xml(device, overlay, others)
    start = time.monotonic()
    if has_guest_agent(live):
        try:
            await lv.snapshot(domain, xml, _FLAGS | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
            return True, time.monotonic() - start
        except LibvirtFailed:
            start = time.monotonic()  # the guest agent did not freeze: crash-consistent
    await lv.snapshot(domain, xml, _FLAGS)
    return False, time.monotonic() - start


async def commit_live(lv: Libvirt, domain: str, serial: str, base: str, top: str, *,
                      bandwidth: int, timeout: float, progress: Progress) -> list[str]:
    """Merges `top` into `base` (the file right under it) in the running domain; the
    disk's chain after, top first. A commit already running on the disk (this same
    request, asked again) is waited for rather than started twice."""
    disk = _attached(await lv.domain_xml(domain), domain, serial)
    device = str(disk.find("target").get("dev"))  # type: ignore[union-attr]
    indexes = disks.chain_indexes(disk)
    chain = list(indexes)
    if top not in chain:
        if base in chain:
            return chain  # merged by an earlier run
        raise Conflict(f"neither {top} nor {base} is in the chain of volume {serial} in "
                       f"domain {domain}", code="chain_mismatch")
    at = chain.index(top)
    if chain[at + 1:at + 2] != [base]:
        raise Conflict(f"{top} does not sit on {base} in domain {domain} (its chain: "
                       f"{', '.join(chain)})", code="chain_mismatch")
    active = at == 0
    running = await lv.block_job_info(domain, device)
    if running is None:
        await lv.block_commit(
            domain, device, f"{device}[{indexes[base]}]",
            None if active else f"{device}[{indexes[top]}]",
            libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE if active else 0, bandwidth)
    elif running.type not in _COMMITS:
        raise Conflict(f"disk {device} of domain {domain} runs another block job",
                       code="block_job_busy")
    jobs = BlockJobs(lv)
    job = BlockJob(domain, device, leaves=top)
    if await jobs.wait(job, timeout=timeout, progress=progress) is Outcome.READY:
        await jobs.pivot(job, timeout=timeout)
    return await jobs.chain(domain, device)
