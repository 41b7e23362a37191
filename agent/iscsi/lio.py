"""The `lio` target driver: the kernel's LIO target through rtslib-fb, whose classes are
named after the kernel objects (Target, TPG, NetworkPortal, LUN, NodeACL, MappedLUN,
FileIOStorageObject). The configuration is saved after every change and restored when
the agent starts. rtslib writes configfs synchronously, so calls run in a thread.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from agent.iscsi.target import VOLUME_LUN, TargetDriver
from shared.errors import OperationFailed
from shared.protocol.iscsi import ChapCredentials

T = TypeVar("T")
TPG_TAG = 1


def storage_object_name(target: str) -> str:
    """LIO storage object names allow no ':'; derive one from the target's suffix."""
    return "strata-" + target.rsplit(":", 1)[-1].replace(".", "-")[:48]


class LioDriver(TargetDriver):
    def __init__(self, save_file: str, portal: tuple[str, int], rtslib: Any = None) -> None:
        self._rts = rtslib if rtslib is not None else importlib.import_module("rtslib_fb")
        self._save_file = save_file
        self._portal = portal
        self._lock = threading.Lock()

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        return await asyncio.to_thread(locked)

    def _find_target(self, name: str) -> Any:
        for target in self._rts.RTSRoot().targets:
            if target.wwn == name:
                return target
        return None

    def _tpg(self, target: Any) -> Any:
        for tpg in target.tpgs:
            if tpg.tag == TPG_TAG:
                return tpg
        return self._rts.TPG(target, TPG_TAG)

    def _save(self) -> None:
        self._rts.RTSRoot().save_to_file(self._save_file)

    async def export(self, target: str, path: str, chap: ChapCredentials | None) -> None:
        def do() -> None:
            rts = self._rts
            existing = self._find_target(target)
            tgt = existing or rts.Target(rts.FabricModule("iscsi"), wwn=target)
            tpg = self._tpg(tgt)
            tpg.set_attribute("generate_node_acls", "0")
            tpg.set_attribute("demo_mode_write_protect", "1")
            tpg.set_attribute("authentication", "1" if chap else "0")
            if not list(tpg.network_portals):
                rts.NetworkPortal(tpg, self._portal[0], self._portal[1])
            if not any(lun.lun == VOLUME_LUN for lun in tpg.luns):
                # A logical volume is a block backstore; a file is a fileio one.
                backstore = (rts.BlockStorageObject if path.startswith("/dev/")
                             else rts.FileIOStorageObject)
                so = backstore(storage_object_name(target), dev=path)
                rts.LUN(tpg, VOLUME_LUN, so)
            if chap:
                tpg.chap_userid, tpg.chap_password = chap.user, chap.password
            tpg.enable = True
            self._save()

        await self._run(do)

    async def unexport(self, target: str) -> None:
        def do() -> None:
            tgt = self._find_target(target)
            if tgt is None:
                return
            objects = [lun.storage_object for tpg in tgt.tpgs for lun in tpg.luns]
            tgt.delete()
            for so in objects:
                so.delete()
            self._save()

        await self._run(do)

    async def grant(self, target: str, initiator: str) -> list[str]:
        def do() -> list[str]:
            tgt = self._find_target(target)
            if tgt is None:
                raise OperationFailed(f"target {target} is not exported here",
                                      code="no_such_target")
            tpg = self._tpg(tgt)
            acls = {acl.node_wwn: acl for acl in tpg.node_acls}
            if initiator not in acls:
                acl = self._rts.NodeACL(tpg, initiator)
                if tpg.chap_userid:
                    acl.chap_userid, acl.chap_password = tpg.chap_userid, tpg.chap_password
                lun = next(lun for lun in tpg.luns if lun.lun == VOLUME_LUN)
                self._rts.MappedLUN(acl, VOLUME_LUN, lun)
                acls[initiator] = acl
            self._save()
            return sorted(acls)

        return await self._run(do)

    async def revoke(self, target: str, initiator: str) -> list[str]:
        def do() -> list[str]:
            tgt = self._find_target(target)
            if tgt is None:
                return []
            tpg = self._tpg(tgt)
            remaining = []
            for acl in list(tpg.node_acls):
                if acl.node_wwn == initiator:
                    acl.delete()
                else:
                    remaining.append(acl.node_wwn)
            self._save()
            return sorted(remaining)

        return await self._run(do)

    def _existing_tpg(self, target: str) -> Any:
        tgt = self._find_target(target)
        if tgt is None:
            raise OperationFailed(f"target {target} is not exported here", code="no_such_target")
        return self._tpg(tgt)

    async def detach_lun(self, target: str) -> None:
        """Deleting the LUN deletes the mapped LUNs of every ACL with it."""
        def do() -> None:
            tpg = self._existing_tpg(target)
            for lun in list(tpg.luns):
                if lun.lun == VOLUME_LUN:
                    so = lun.storage_object
                    lun.delete()
                    so.delete()
            self._save()

        await self._run(do)

    async def attach_lun(self, target: str, path: str) -> None:
        def do() -> None:
            rts = self._rts
            tpg = self._existing_tpg(target)
            lun = next((lun for lun in tpg.luns if lun.lun == VOLUME_LUN), None)
            if lun is None:
                backstore = (rts.BlockStorageObject if path.startswith("/dev/")
                             else rts.FileIOStorageObject)
                lun = rts.LUN(tpg, VOLUME_LUN, backstore(storage_object_name(target), dev=path))
            for acl in tpg.node_acls:
                if not any(m.mapped_lun == VOLUME_LUN for m in acl.mapped_luns):
                    rts.MappedLUN(acl, VOLUME_LUN, lun)
            self._save()

        await self._run(do)

    async def refresh_lun(self, target: str, path: str) -> None:
        """A block backstore reads its device's size on every request, so a grown logical
        volume needs nothing; a fileio one fixed its size when made, and is made again."""
        if path.startswith("/dev/"):
            await self._run(lambda: self._existing_tpg(target))
            return
        await super().refresh_lun(target, path)

    async def restore(self) -> None:
        def do() -> None:
            try:
                self._rts.RTSRoot().restore_from_file(self._save_file, clear_existing=False)
            except FileNotFoundError:
                return

        await self._run(do)
