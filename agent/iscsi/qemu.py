"""The `qemu` connector: QEMU's userspace initiator (libiscsi). No host session; the result
is a QEMU block-driver spec naming this host's initiator, checked by opening it with
qemu-img."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from agent.iscsi.initiator import Initiator
from agent.tools.qemuimg import QemuImg
from shared.errors import OperationFailed
from shared.protocol.iscsi import ConnectVolumeResult, IscsiTarget


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
