"""Live snapshots of an attached volume: an external, disk-only snapshot of its one disk
(`DISK_ONLY | NO_METADATA | ATOMIC`), the same chain shape as an offline snapshot, so
both kinds join one tree. Quiesced through the guest agent when the domain has one (a
guest agent that does not answer gives a crash-consistent snapshot, reported as such).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import libvirt

from agent.libvirt import disks
from agent.libvirt.disks import Layer
from agent.tools.libvirt import Libvirt, LibvirtFailed
from shared.errors import Conflict, NotFound

GUEST_AGENT = "org.qemu.guest_agent.0"
_FLAGS = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
          | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
          | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)


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
    disk = disks.find_disk(live, serial)
    if disk is None:
        raise NotFound(f"domain {domain} has no disk of volume {serial}",
                       code="disk_not_attached")
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
