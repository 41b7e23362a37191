"""The hypervisor side of iSCSI: making a granted LUN openable by this host's QEMU.

Two modes behind one interface, as os-brick has one connector per protocol:
- `qemu`: QEMU's userspace initiator (libiscsi). No host session; the result is a QEMU
  block-driver spec naming this host's initiator, checked by opening it with qemu-img.
- `kernel`: open-iscsi. Discovery, CHAP, login, wait for the device under
  /dev/disk/by-path; sessions are reference-counted and logged out with the last volume.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

from agent.executor import Executor
from agent.tools.qemuimg import QemuImg
from shared.errors import OperationFailed, Timeout
from shared.protocol.iscsi import ConnectVolumeResult, IscsiTarget

INITIATOR_NAME_FILE = "/etc/iscsi/initiatorname.iscsi"


def read_initiator_name(path: str = INITIATOR_NAME_FILE) -> str | None:
    """The `InitiatorName=` of open-iscsi's configuration, if the host has one."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "InitiatorName" and value:
                    return value
    except FileNotFoundError:
        return None
    return None


class Initiator(abc.ABC):
    def __init__(self, initiator_iqn: str) -> None:
        self.iqn = initiator_iqn

    @abc.abstractmethod
    async def connect(self, target: IscsiTarget) -> ConnectVolumeResult: ...

    @abc.abstractmethod
    async def disconnect(self, target: IscsiTarget) -> None: ...


class QemuInitiator(Initiator):
    def __init__(self, initiator_iqn: str, qemu_img: QemuImg, secrets_dir: str) -> None:
        super().__init__(initiator_iqn)
        self._qemu_img = qemu_img
        self._secrets_dir = secrets_dir

    def spec(self, target: IscsiTarget) -> dict[str, Any]:
        """QEMU's `iscsi` block driver options; CHAP's password travels as a QEMU secret
        object named after the user, never in the spec."""
        spec: dict[str, Any] = {
            "driver": "iscsi", "transport": "tcp", "portal": target.portal,
            "target": target.target, "lun": target.lun, "initiator-name": self.iqn,
        }
        if target.chap:
            spec["user"] = target.chap.user
            spec["password-secret"] = f"chap-{target.chap.user}"
        return spec

    async def connect(self, target: IscsiTarget) -> ConnectVolumeResult:
        """Logs in once through libiscsi (qemu-img info) to prove this host may open it."""
        spec = self.spec(target)
        image = "json:" + json.dumps({"driver": "raw", "file": spec})
        objects: list[str] = []
        secret_file = None
        try:
            if target.chap:
                secret_file = self._write_secret(target.chap.password)
                objects = [f"secret,id={spec['password-secret']},file={secret_file}"]
            info = await self._qemu_img.info(image, objects=objects)
        except OperationFailed as exc:
            raise OperationFailed(
                f"host {self.iqn} cannot open {target.target} lun {target.lun}: {exc.message}",
                code="access_denied") from exc
        finally:
            if secret_file:
                os.unlink(secret_file)
        return ConnectVolumeResult(mode="qemu", qemu_spec=spec, size=info.virtual_size)

    def _write_secret(self, password: str) -> str:
        os.makedirs(self._secrets_dir, mode=0o700, exist_ok=True)
        fd, path = tempfile.mkstemp(dir=self._secrets_dir, prefix="chap-")
        with os.fdopen(fd, "w") as f:
            f.write(password)
        return path

    async def disconnect(self, target: IscsiTarget) -> None:
        """Nothing to undo: QEMU's initiator holds no session on the host."""


# iscsiadm exit codes that mean "already so": session exists / no session to log out.
_ALREADY_LOGGED_IN = 15
_NO_SESSION = 21


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
        self._sessions: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()

    @staticmethod
    def device_path(target: IscsiTarget) -> str:
        return (f"/dev/disk/by-path/ip-{target.portal}-iscsi-{target.target}"
                f"-lun-{target.lun}")

    async def _iscsiadm(self, *args: str, ok: tuple[int, ...] = (),
                        redact: tuple[str, ...] = ()) -> None:
        result = await self._exec.run(["iscsiadm", *args], timeout=60, check=False,
                                      redact=redact)
        if result.returncode != 0 and result.returncode not in ok:
            detail = result.stderr.strip() or f"exit code {result.returncode}"
            raise OperationFailed(f"iscsiadm {' '.join(args[:4])} failed: {detail}",
                                  code="iscsi_login_failed")

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
        node = ["-m", "node", "-T", target.target, "-p", target.portal]
        await self._iscsiadm("-m", "discovery", "-t", "sendtargets", "-p", target.portal)
        if target.chap:
            for name, value in (("node.session.auth.authmethod", "CHAP"),
                                ("node.session.auth.username", target.chap.user),
                                ("node.session.auth.password", target.chap.password)):
                secret = (value,) if name == "node.session.auth.password" else ()
                await self._iscsiadm(*node, "-o", "update", "-n", name, "-v", value,
                                     redact=secret)
        await self._iscsiadm(*node, "--login", ok=(_ALREADY_LOGGED_IN,))

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
            await self._iscsiadm("-m", "node", "-T", target.target, "-p", target.portal,
                                 "--logout", ok=(_NO_SESSION,))

    def session_count(self, target: IscsiTarget) -> int:
        return self._sessions.get((target.portal, target.target), 0)


def _block_device_size(device: str) -> int:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)
