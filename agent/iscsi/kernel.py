"""The `kernel` connector: open-iscsi. Discovery, CHAP, login, wait for the device under
/dev/disk/by-path; sessions are reference-counted per portal and target and logged out
with the last volume. Every step goes through an iface record carrying the configured
initiator name, the name the controller granted."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable

from agent.executor import Executor
from agent.iscsi.initiator import Initiator
from agent.tools import iscsiadm
from shared.errors import Timeout
from shared.protocol.iscsi import ConnectVolumeResult, IscsiTarget


class KernelInitiator(Initiator):
    def __init__(self, initiator_iqn: str, executor: Executor, *,
                 device_exists: Callable[[str], bool] = os.path.exists,
                 device_size: Callable[[str], int] | None = None,
                 device_timeout: float = 30, poll: float = 0.2) -> None:
        super().__init__(initiator_iqn)
        self._exec = executor
        self._exists = device_exists
        self._size = device_size or _block_device_size
        self._device_timeout = device_timeout
        self._poll = poll
        self.iface = iface_name(initiator_iqn)
        self._sessions: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def device_path(target: IscsiTarget) -> str:
        return (f"/dev/disk/by-path/ip-{target.portal}-iscsi-{target.target}"
                f"-lun-{target.lun}")

    async def connect(self, target: IscsiTarget) -> ConnectVolumeResult:
        key = (target.portal, target.target)
        async with self._lock:
            if self._sessions.get(key, 0) == 0:
                await self._login(target)
            self._sessions[key] = self._sessions.get(key, 0) + 1
        device = self.device_path(target)
        try:
            await self._wait_for(device)
        except Timeout:
            await self.disconnect(target)
            raise
        return ConnectVolumeResult(mode="kernel", device=device, size=self._size(device))

    async def _login(self, target: IscsiTarget) -> None:
        await iscsiadm.ensure_iface(self._exec, self.iface, self.iqn)
        await iscsiadm.discover(self._exec, target.portal, self.iface)
        if target.chap:
            await iscsiadm.set_chap(self._exec, target.target, target.portal, self.iface,
                                    target.chap.user, target.chap.password)
        await iscsiadm.login(self._exec, target.target, target.portal, self.iface)

    async def _wait_for(self, device: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._device_timeout
        while not await asyncio.to_thread(self._exists, device):
            if loop.time() >= deadline:
                raise Timeout(f"{device} did not appear within {self._device_timeout:g}s")
            await asyncio.sleep(self._poll)

    async def disconnect(self, target: IscsiTarget) -> None:
        key = (target.portal, target.target)
        async with self._lock:
            count = self._sessions.get(key, 0)
            if count > 1:
                self._sessions[key] = count - 1
                return
            self._sessions.pop(key, None)
            await iscsiadm.logout(self._exec, target.target, target.portal, self.iface)

    def session_count(self, target: IscsiTarget) -> int:
        return self._sessions.get((target.portal, target.target), 0)


def iface_name(initiator_iqn: str) -> str:
    """One iface record per initiator name, so agents with different names never share
    one."""
    return "strata-" + hashlib.sha256(initiator_iqn.encode()).hexdigest()[:12]


def _block_device_size(device: str) -> int:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
