"""libvirtd through libvirt-python: one connection per agent, opened again after the
daemon restarts; each call runs in a worker thread, off the event loop, with a timeout.

Thin on purpose: XML in, XML or a typed value out, and named errors. What a disk looks
like, and when to attach or detach it, is policy (`agent/libvirt/`).

libvirt-python is imported on first use: it costs a tenth of a second and a sixth of the
memory of every agent's start, and only hosts running domains need it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from shared.errors import NotFound, OperationFailed

if TYPE_CHECKING:
    import libvirt

T = TypeVar("T")


class LibvirtFailed(OperationFailed):
    default_code = "libvirt_failed"


class LibvirtUnavailable(LibvirtFailed):
    """libvirtd does not answer (not running, or too slow)."""

    default_code = "libvirt_unavailable"


class LibvirtInvalid(LibvirtFailed):
    """The request does not fit the domain's state (e.g. no block job on that disk)."""

    default_code = "libvirt_invalid"


class DomainNotFound(NotFound):
    default_code = "domain_not_found"


@dataclass(frozen=True)
class BlockJobInfo:
    """virDomainBlockJobInfo: the job's type (VIR_DOMAIN_BLOCK_JOB_TYPE_*), bytes done of
    bytes to do (`cur == end` once a mirroring job is ready), and its speed limit."""

    type: int
    cur: int
    end: int
    bandwidth: int


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr unless a handler takes them."""


class Libvirt:
    def __init__(self, uri: str, timeout: float = 30) -> None:
        self.uri = uri
        self.timeout = timeout
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def _connection(self) -> libvirt.virConnect:
        import libvirt

        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._drop_locked()
            try:
                libvirt.registerErrorHandler(_quiet, None)
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise LibvirtUnavailable(f"cannot connect to libvirt at {self.uri}: "
                                         f"{exc.get_error_message()}") from exc
            return self._conn

    def _drop_locked(self) -> None:
        import libvirt

        if self._conn is not None:
            try:
                self._conn.close()
            except libvirt.libvirtError:
                pass
            self._conn = None

    def _drop(self) -> None:
        with self._lock:
            self._drop_locked()

    def _run(self, fn: Callable[[libvirt.virConnect], T], what: str) -> T:
        import libvirt

        # Errors that mean the connection, not the request, failed: open it again, retry once.
        lost = {libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC, libvirt.VIR_ERR_NO_CONNECT,
                libvirt.VIR_ERR_INVALID_CONN}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                return fn(conn)
            except libvirt.libvirtError as exc:
                code = exc.get_error_code()
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    raise DomainNotFound(f"{what}: no such domain") from exc
                if code in lost:
                    self._drop()
                    if attempt == 1:
                        continue
                    raise LibvirtUnavailable(f"{what}: {exc.get_error_message()}") from exc
                if code == libvirt.VIR_ERR_OPERATION_INVALID:
                    raise LibvirtInvalid(f"{what}: {exc.get_error_message()}") from exc
                raise LibvirtFailed(f"{what}: {exc.get_error_message()}") from exc
        raise AssertionError("unreachable")

    async def call(self, fn: Callable[[libvirt.virConnect], T], what: str,
                   timeout: float | None = None) -> T:
        """`fn(connection)` in a worker thread. On timeout the caller gets
        LibvirtUnavailable; the thread finishes the call on its own (libvirt calls
        can't be interrupted), its result unused."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._run, fn, what),
                                          timeout or self.timeout)
        except TimeoutError:
            raise LibvirtUnavailable(f"{what}: libvirt did not answer within "
                                     f"{timeout or self.timeout:g}s") from None

    async def domain_xml(self, domain: str, *, inactive: bool = False) -> str:
        import libvirt

        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return await self.call(lambda c: str(c.lookupByName(domain).XMLDesc(flags)),
                               f"reading domain {domain}")

    async def domain_state(self, domain: str) -> tuple[int, bool, bool]:
        """libvirt's VIR_DOMAIN_* state code, whether it runs, whether it is defined."""
        def state(c: libvirt.virConnect) -> tuple[int, bool, bool]:
            dom = c.lookupByName(domain)
            return int(dom.state()[0]), bool(dom.isActive()), bool(dom.isPersistent())
        return await self.call(state, f"reading the state of domain {domain}")

    async def attach_device(self, domain: str, xml: str, flags: int) -> None:
        await self.call(lambda c: c.lookupByName(domain).attachDeviceFlags(xml, flags),
                        f"attaching a device to domain {domain}")

    async def detach_device(self, domain: str, xml: str, flags: int) -> None:
        """Asks for the unplug; the guest may take its time (or never) to let go."""
        await self.call(lambda c: c.lookupByName(domain).detachDeviceFlags(xml, flags),
                        f"detaching a device from domain {domain}")

    async def snapshot(self, domain: str, xml: str, flags: int) -> None:
        """snapshotCreateXML; with NO_METADATA libvirt keeps no record of it."""
        await self.call(lambda c: c.lookupByName(domain).snapshotCreateXML(xml, flags),
                        f"snapshotting domain {domain}", timeout=max(self.timeout, 120))

    async def block_commit(self, domain: str, disk: str, base: str | None, top: str | None,
                           flags: int, bandwidth: int = 0) -> None:
        """Starts a block commit of `top` into `base` (None: the disk's top, or its
        bottom); `bandwidth` in bytes per second, 0 for no limit."""
        import libvirt

        await self.call(lambda c: c.lookupByName(domain).blockCommit(
            disk, base, top, bandwidth,
            flags | (libvirt.VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES if bandwidth else 0)),
            f"starting a block commit on {disk} of domain {domain}")

    async def block_copy(self, domain: str, disk: str, dest_xml: str, flags: int,
                         bandwidth: int = 0) -> None:
        """Starts a block copy of `disk` into the `<disk>` described by `dest_xml`;
        `bandwidth` in bytes per second, 0 for no limit."""
        import libvirt

        params = {libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH: bandwidth} if bandwidth else None
        await self.call(lambda c: c.lookupByName(domain).blockCopy(disk, dest_xml, params,
                                                                   flags),
                        f"starting a block copy of {disk} of domain {domain}")

    async def block_job_info(self, domain: str, disk: str) -> BlockJobInfo | None:
        """The disk's block job, None when it has none."""
        import libvirt

        def info(c: libvirt.virConnect) -> BlockJobInfo | None:
            raw = c.lookupByName(domain).blockJobInfo(
                disk, libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES)
            if not raw:
                return None
            return BlockJobInfo(type=int(raw["type"]), cur=int(raw["cur"]),
                                end=int(raw["end"]), bandwidth=int(raw["bandwidth"]))
        return await self.call(info, f"reading the block job on {disk} of domain {domain}")

    async def block_job_abort(self, domain: str, disk: str, flags: int) -> None:
        """blockJobAbort: ends the job (PIVOT: onto its new image), ASYNC returns at once."""
        await self.call(lambda c: c.lookupByName(domain).blockJobAbort(disk, flags),
                        f"ending the block job on {disk} of domain {domain}")

    async def block_job_speed(self, domain: str, disk: str, bandwidth: int) -> None:
        """A running job's speed limit, bytes per second (0: none)."""
        import libvirt

        await self.call(lambda c: c.lookupByName(domain).blockJobSetSpeed(
            disk, bandwidth, libvirt.VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES),
            f"setting the speed of the block job on {disk} of domain {domain}")

    async def define_secret(self, xml: str, value: bytes) -> str:
        """A secret object (made, or found by its usage, and given its value); its UUID."""
        def define(c: libvirt.virConnect) -> str:
            secret = c.secretDefineXML(xml)
            secret.setValue(value)
            return str(secret.UUIDString())
        return await self.call(define, "defining a libvirt secret")

    async def undefine_secret(self, usage_type: int, usage: str) -> bool:
        """Whether it existed."""
        import libvirt

        def undefine(c: libvirt.virConnect) -> bool:
            try:
                secret = c.secretLookupByUsage(usage_type, usage)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_SECRET:
                    return False
                raise
            secret.undefine()
            return True
        return await self.call(undefine, "removing a libvirt secret")

    def close(self) -> None:
        self._drop()

