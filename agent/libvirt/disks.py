"""A volume's `<disk>` element, built with ElementTree (values are escaped, never
formatted into XML text), and finding a disk again in a domain's XML by its serial.

Every disk is virtio (virtio-blk, or a disk on a virtio-scsi controller), `cache='none'`
(O_DIRECT: no host page cache between the guest and shared or network storage),
`discard='unmap'` (the guest's TRIM reaches thin qcow2 and LUNs) and carries the volume
id as its serial. The qcow2 backing chain is written out as `<backingStore>` elements,
so libvirt neither probes image headers nor guesses formats.
"""

from __future__ import annotations

import string
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from shared.names import is_nfs_url, split_nfs_url

Bus = Literal["virtio", "scsi"]
_PREFIX: dict[Bus, str] = {"virtio": "vd", "scsi": "sd"}


@dataclass(frozen=True)
class Layer:
    """One image of a chain: a file, an `nfs://` URL, or a host block device."""

    path: str
    format: str
    block: bool = False


@dataclass(frozen=True)
class IscsiSource:
    """A LUN QEMU opens itself (libiscsi); CHAP's password is in the libvirt secret whose
    usage is `secret_usage`."""

    host: str
    port: int
    target: str
    lun: int
    initiator: str
    chap_user: str | None = None
    secret_usage: str | None = None


def set_source(parent: ET.Element, layer: Layer) -> None:
    """`type` on `parent` and its `<source>` child."""
    if is_nfs_url(layer.path):
        server, path = split_nfs_url(layer.path)
        parent.set("type", "network")
        src = ET.SubElement(parent, "source", protocol="nfs", name=path)
        ET.SubElement(src, "host", name=server)
    elif layer.block:
        parent.set("type", "block")
        ET.SubElement(parent, "source", dev=layer.path)
    else:
        parent.set("type", "file")
        ET.SubElement(parent, "source", file=layer.path)


def _backing(parent: ET.Element, chain: list[Layer]) -> None:
    """The chain below the top, nested; an empty `<backingStore/>` ends it."""
    for layer in chain:
        store = ET.SubElement(parent, "backingStore")
        ET.SubElement(store, "format", type=layer.format)
        set_source(store, layer)
        parent = store
    ET.SubElement(parent, "backingStore")


def _iscsi_source(disk: ET.Element, lun: IscsiSource) -> None:
    disk.set("type", "network")
    src = ET.SubElement(disk, "source", protocol="iscsi", name=f"{lun.target}/{lun.lun}")
    ET.SubElement(src, "host", name=lun.host, port=str(lun.port))
    if lun.chap_user is not None and lun.secret_usage is not None:
        auth = ET.SubElement(src, "auth", username=lun.chap_user)
        ET.SubElement(auth, "secret", type="iscsi", usage=lun.secret_usage)
    ET.SubElement(ET.SubElement(src, "initiator"), "iqn", name=lun.initiator)


def disk_xml(*, serial: str, device: str, bus: Bus, chain: list[Layer] | None = None,
             iscsi: IscsiSource | None = None) -> str:
    """`chain`: the volume's image top first (a file, URL or device); or `iscsi`."""
    disk = ET.Element("disk", device="disk")
    fmt = chain[0].format if chain else "raw"
    ET.SubElement(disk, "driver", name="qemu", type=fmt, cache="none", discard="unmap")
    if iscsi is not None:
        _iscsi_source(disk, iscsi)
        ET.SubElement(disk, "backingStore")
    elif chain:
        set_source(disk, chain[0])
        _backing(disk, chain[1:])
    else:
        raise ValueError("a disk needs a chain or an iSCSI source")
    ET.SubElement(disk, "target", dev=device, bus=bus)
    ET.SubElement(disk, "serial").text = serial
    return ET.tostring(disk, encoding="unicode")


def secret_xml(usage: str, description: str) -> str:
    """A private (never read back through the API) iSCSI secret object."""
    secret = ET.Element("secret", ephemeral="no", private="yes")
    ET.SubElement(secret, "description").text = description
    ET.SubElement(ET.SubElement(secret, "usage", type="iscsi"), "target").text = usage
    return ET.tostring(secret, encoding="unicode")


def parse(domain_xml: str) -> ET.Element:
    """A domain's XML as libvirtd, which this host trusts, describes it."""
    return ET.fromstring(domain_xml)  # noqa: S314 (from the local libvirtd)


def find_disk(domain_xml: str, serial: str) -> ET.Element | None:
    """The disk with this serial, as the domain describes it."""
    for disk in parse(domain_xml).iterfind("devices/disk"):
        if disk.findtext("serial") == serial:
            return disk
    return None


def source_path(element: ET.Element) -> str | None:
    """A `<disk>`'s or `<backingStore>`'s image as Strata names it: a path, a device, or
    an `nfs://` URL (None for an iSCSI LUN or an empty element)."""
    src = element.find("source")
    if src is None:
        return None
    if src.get("protocol") == "nfs":
        host = src.find("host")
        return f"nfs://{host.get('name') if host is not None else ''}{src.get('name')}"
    return src.get("file") or src.get("dev")


def chain_indexes(disk: ET.Element) -> dict[str, int]:
    """The images the domain has open for this disk, top first, each with libvirt's
    index of it in the chain (`sda[2]` names it in a block job; 0 where the XML gives
    none)."""
    chain = {}
    element: ET.Element | None = disk
    while element is not None:
        path = source_path(element)
        if path is None:
            break
        src = element.find("source")
        index = element.get("index") or (src.get("index") if src is not None else None)
        chain[path] = int(index or 0)
        element = element.find("backingStore")
    return chain


def chain_of(disk: ET.Element) -> list[str]:
    """The images the domain has open for this disk, top first, as its XML lists them."""
    return list(chain_indexes(disk))


def disks_by_target(domain_xml: str) -> dict[str, str]:
    """Target name -> serial ('' without one) of every disk."""
    found = {}
    for disk in parse(domain_xml).iterfind("devices/disk"):
        target = disk.find("target")
        if target is not None and target.get("dev"):
            found[target.get("dev", "")] = disk.findtext("serial") or ""
    return found


def tops_by_serial(domain_xml: str) -> dict[str, str]:
    """Serial -> the image the domain writes for that disk (its chain's top)."""
    found = {}
    for disk in parse(domain_xml).iterfind("devices/disk"):
        serial, chain = disk.findtext("serial"), chain_of(disk)
        if serial and chain:
            found[serial] = chain[0]
    return found


def free_target(taken: Iterable[str], bus: Bus) -> str:
    """The first free name on the bus: vdb after vda, ..., vdaa after vdz."""
    used = set(taken)
    prefix = _PREFIX[bus]
    letters = string.ascii_lowercase
    names = [prefix + a for a in letters] + [prefix + a + b for a in letters for b in letters]
    for name in names:
        if name not in used:
            return name
    raise ValueError(f"no free {bus} disk name left")


def has_scsi_controller(domain_xml: str) -> bool:
    return any(c.get("type") == "scsi" and c.get("model") == "virtio-scsi"
               for c in parse(domain_xml).iterfind("devices/controller"))


def scsi_controller_xml() -> str:
    return ET.tostring(ET.Element("controller", type="scsi", model="virtio-scsi"),
                       encoding="unicode")


def to_xml(element: ET.Element) -> str:
    return ET.tostring(element, encoding="unicode")
