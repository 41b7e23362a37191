"""Attaching a volume to a domain and detaching it: the host's access first, then the
hot-plug; on the way back the unplug, and the host's access only once the disk is gone.
"""

from __future__ import annotations

import asyncio
import posixpath
import time
from dataclasses import dataclass

import libvirt

from agent.iscsi.initiator import Initiator
from agent.libvirt import disks
from agent.libvirt.disks import Bus, IscsiSource, Layer
from agent.tools.libvirt import DomainNotFound, Libvirt
from agent.tools.qemuimg import QemuImg
from shared.errors import OperationFailed, Unsupported
from shared.names import validate_store_path
from shared.protocol.iscsi import IscsiTarget
from shared.protocol.libvirt import VolumeSource

# How often a detach looks whether the guest has let go.
_POLL = 0.2


@dataclass(frozen=True)
class Opened:
    """What the host opened: a chain of files, URLs or a device; or a libiscsi LUN."""

    chain: list[Layer] | None = None
    iscsi: IscsiSource | None = None


class DetachTimeout(OperationFailed):
    default_code = "detach_timeout"


def secret_usage(serial: str) -> str:
    """The libvirt secret holding a volume's CHAP password, named after the volume."""
    return f"strata-chap-{serial}"


def _split_portal(portal: str) -> tuple[str, int]:
    host, _, port = portal.rpartition(":")
    return host.strip("[]"), int(port)


class Attacher:
    def __init__(self, lv: Libvirt, qemu_img: QemuImg, initiator: Initiator | None,
                 bus: Bus) -> None:
        self._lv = lv
        self._qemu_img = qemu_img
        self._initiator = initiator
        self._bus = bus

    async def _flags(self, domain: str) -> int:
        """The live definition if it runs, the persistent one if it has one."""
        _, active, persistent = await self._lv.domain_state(domain)
        return ((libvirt.VIR_DOMAIN_AFFECT_LIVE if active else 0)
                | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if persistent else 0))

    async def chain(self, source: VolumeSource) -> list[Layer]:
        """The chain from the images' headers, each image confined to the source's
        directories: a header naming any other file never reaches the domain."""
        assert source.path is not None
        if source.format == "raw":
            return [Layer(source.path, "raw")]
        dirs = source.dirs or [posixpath.dirname(source.path)]
        chain = [Layer(layer.filename, layer.format)
                 for layer in await self._qemu_img.chain(source.path, fmt=source.format)]
        for layer in chain:
            try:
                validate_store_path(layer.path)
            except ValueError:
                confined = False
            else:
                confined = posixpath.dirname(layer.path) in dirs and ".." not in layer.path
            if not confined:
                raise OperationFailed(
                    f"the chain of {source.path} names {layer.path}, outside the "
                    f"storage's directories ({', '.join(dirs)}); refusing to attach it",
                    code="chain_outside_storage")
        return chain

    def _need_initiator(self) -> Initiator:
        if self._initiator is None:
            raise Unsupported("this host has no iSCSI initiator name (set initiator_iqn)",
                              code="no_initiator")
        return self._initiator

    async def _open_iscsi(self, serial: str, target: IscsiTarget) -> Opened:
        """Once this host reaches the LUN: a kernel session's device, or a libiscsi
        source whose CHAP password is a libvirt secret object."""
        initiator = self._need_initiator()
        opened = await initiator.connect(target)
        if opened.mode == "kernel" and opened.device:
            return Opened(chain=[Layer(opened.device, "raw", block=True)])
        usage = None
        if target.chap is not None:
            usage = secret_usage(serial)
            await self._lv.define_secret(
                disks.secret_xml(usage, f"CHAP password of Strata volume {serial}"),
                target.chap.password.encode())
        host, port = _split_portal(target.portal)
        return Opened(iscsi=IscsiSource(
            host=host, port=port, target=target.target, lun=target.lun,
            initiator=initiator.iqn, chap_user=target.chap.user if target.chap else None,
            secret_usage=usage))

    async def _release(self, serial: str, source: VolumeSource) -> None:
        """The host's access to the volume: the iSCSI session and the secret object."""
        if source.iscsi is not None:
            await self._need_initiator().disconnect(source.iscsi)
            await self._lv.undefine_secret(libvirt.VIR_SECRET_USAGE_TYPE_ISCSI,
                                           secret_usage(serial))

    async def attach(self, domain: str, serial: str, source: VolumeSource) -> str:
        """The disk's target name; the same one again if it is attached already."""
        live = await self._lv.domain_xml(domain)
        present = disks.find_disk(live, serial)
        if present is not None:
            return str(present.find("target").get("dev"))  # type: ignore[union-attr]
        flags = await self._flags(domain)
        if source.iscsi is not None:
            opened = await self._open_iscsi(serial, source.iscsi)
        else:
            opened = Opened(chain=await self.chain(source))
        try:
            if self._bus == "scsi" and not disks.has_scsi_controller(live):
                await self._lv.attach_device(domain, disks.scsi_controller_xml(), flags)
            taken = set(disks.disks_by_target(live))
            if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
                taken |= set(disks.disks_by_target(
                    await self._lv.domain_xml(domain, inactive=True)))
            device = disks.free_target(taken, self._bus)
            await self._lv.attach_device(domain, disks.disk_xml(
                serial=serial, device=device, bus=self._bus, chain=opened.chain,
                iscsi=opened.iscsi), flags)
        except BaseException:
            await self._release(serial, source)
            raise
        return device

    async def detach(self, domain: str, serial: str, source: VolumeSource,
                     timeout: float) -> bool:
        """Whether the domain had the disk. The host's access is released only once no
        definition holds it; a guest that keeps it past `timeout` is DetachTimeout."""
        try:
            live = disks.find_disk(await self._lv.domain_xml(domain), serial)
            _, active, persistent = await self._lv.domain_state(domain)
        except DomainNotFound:
            # A domain that is gone holds no disk: only the host's access is left.
            await self._release(serial, source)
            return False
        config = (disks.find_disk(await self._lv.domain_xml(domain, inactive=True), serial)
                  if persistent else None)
        if config is not None:
            await self._lv.detach_device(domain, disks.to_xml(config),
                                         libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        if live is not None and active:
            await self._lv.detach_device(domain, disks.to_xml(live),
                                         libvirt.VIR_DOMAIN_AFFECT_LIVE)
            await self._wait_gone(domain, serial, timeout)
        await self._release(serial, source)
        return live is not None or config is not None

    async def _wait_gone(self, domain: str, serial: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while disks.find_disk(await self._lv.domain_xml(domain), serial) is not None:
            if time.monotonic() > deadline:
                raise DetachTimeout(
                    f"the guest of domain {domain} did not release the disk of volume "
                    f"{serial} within {timeout:g}s; it stays attached and the host keeps "
                    "its access (the guest may be busy, or lack hot-unplug support); "
                    "try again, or stop the domain")
            await asyncio.sleep(_POLL)
