"""The `<disk>` XML a volume gets, built without libvirt (integration tests hot-plug it)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from agent.libvirt import disks
from agent.libvirt.disks import IscsiSource, Layer

SERIAL = "0b6f2c7e-1d7a-4c1e-9f55-5a4f3f2a7c10"


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_qcow2_chain_over_nfs_and_files() -> None:
    disk = parse(disks.disk_xml(serial=SERIAL, device="vdb", bus="virtio", chain=[
        Layer("nfs://10.0.0.5/export/volumes/v.qcow2", "qcow2"),
        Layer("/var/lib/strata/cache/img", "raw")]))
    driver = disk.find("driver")
    assert driver is not None and driver.attrib == {
        "name": "qemu", "type": "qcow2", "cache": "none", "discard": "unmap"}
    assert disk.get("type") == "network" and disk.findtext("serial") == SERIAL
    src = disk.find("source")
    assert src is not None and src.attrib == {"protocol": "nfs",
                                              "name": "/export/volumes/v.qcow2"}
    assert disk.find("source/host").get("name") == "10.0.0.5"  # type: ignore[union-attr]
    backing = disk.find("backingStore")
    assert backing is not None and backing.get("type") == "file"
    assert backing.find("format").get("type") == "raw"  # type: ignore[union-attr]
    assert backing.find("source").get("file") == "/var/lib/strata/cache/img"  # type: ignore[union-attr]
    end = backing.find("backingStore")
    assert end is not None and len(end) == 0 and not end.attrib, "the chain ends there"
    assert disk.find("target").attrib == {"dev": "vdb", "bus": "virtio"}  # type: ignore[union-attr]


def test_iscsi_with_chap_names_a_secret() -> None:
    xml = disks.disk_xml(serial=SERIAL, device="sda", bus="scsi", iscsi=IscsiSource(
        host="::1", port=3260, target="iqn.2026-11.org.strata:v", lun=1,
        initiator="iqn.2026-11.org.strata:h", chap_user="u", secret_usage="strata-chap-x"))
    disk = parse(xml)
    assert disk.find("source").get("name") == "iqn.2026-11.org.strata:v/1"  # type: ignore[union-attr]
    assert disk.find("source/auth").get("username") == "u"  # type: ignore[union-attr]
    assert disk.find("source/auth/secret").attrib == {"type": "iscsi",  # type: ignore[union-attr]
                                                      "usage": "strata-chap-x"}
    assert disk.find("source/initiator/iqn").get("name") == "iqn.2026-11.org.strata:h"  # type: ignore[union-attr]


def test_values_are_escaped_not_formatted() -> None:
    """A quote or tag in a value stays a value."""
    xml = disks.disk_xml(serial="a'b<c>", device="vda", bus="virtio",
                         chain=[Layer("/x/'><evil/>", "qcow2")])
    disk = parse(xml)
    assert disk.find("source").get("file") == "/x/'><evil/>"  # type: ignore[union-attr]
    assert disk.find(".//evil") is None and disk.findtext("serial") == "a'b<c>"
    secret = parse(disks.secret_xml("u'<x/>", "d"))
    assert secret.get("private") == "yes" and secret.findtext("usage/target") == "u'<x/>"


def test_free_target_and_finding_disks() -> None:
    assert disks.free_target(["vda", "sda"], "virtio") == "vdb"
    assert disks.free_target([f"sd{c}" for c in "abcdefghijklmnopqrstuvwxyz"], "scsi") == "sdaa"
    domain = (f"<domain><devices><disk><target dev='vda'/></disk>"
              f"<disk><target dev='sdb'/><serial>{SERIAL}</serial></disk>"
              "<controller type='scsi' model='virtio-scsi'/></devices></domain>")
    assert disks.disks_by_target(domain) == {"vda": "", "sdb": SERIAL}
    found = disks.find_disk(domain, SERIAL)
    assert found is not None and found.find("target").get("dev") == "sdb"  # type: ignore[union-attr]
    assert disks.find_disk(domain, "other") is None
    assert disks.has_scsi_controller(domain)
    with pytest.raises(ValueError):
        disks.disk_xml(serial=SERIAL, device="vda", bus="virtio")
