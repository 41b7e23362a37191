"""The `lio` target driver: the kernel's LIO target through rtslib-fb, whose classes are
named after the kernel objects (Target, TPG, NetworkPortal, LUN, NodeACL, MappedLUN,
FileIOStorageObject). The configuration is saved after every change and restored when
the agent starts. rtslib writes configfs synchronously, so calls run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from agent.iscsi.target import VOLUME_LUN, TargetDriver
from shared.errors import OperationFailed
from shared.protocol.iscsi import ChapCredentials

log = logging.getLogger(__name__)
T = TypeVar("T")
TPG_TAG = 1
# Where rtslib-fb points LIO's dbroot (the kernel requires the directory to exist).
LIO_DBROOT = "/etc/target"


def storage_object_name(target: str) -> str:
    """LIO storage object names allow no ':'; derive one from the target's suffix."""
    return "strata-" + target.rsplit(":", 1)[-1].replace(".", "-")[:48]


class LioDriver(TargetDriver):
    def __init__(self, save_file: str, portal: tuple[str, int], rtslib: Any = None,
                 dbroot: str = LIO_DBROOT) -> None:
        self._rts = rtslib if rtslib is not None else importlib.import_module("rtslib_fb")
        self._save_file = save_file
        self._portal = portal
        self._dbroot = dbroot
        self._lock = threading.Lock()

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                try:
                    return fn()
                except StopIteration as exc:
                    # Raised into asyncio.to_thread's future, it would never resolve it.
                    raise OperationFailed(f"LIO call failed: {exc!r}") from exc

        return await asyncio.to_thread(locked)

    def _root(self) -> Any:
        """rtslib-fb sets LIO's dbroot to this directory, refused by the kernel while it
        does not exist; nothing else creates it."""
        os.makedirs(self._dbroot, mode=0o755, exist_ok=True)
        return self._rts.RTSRoot()

    def _find_target(self, name: str) -> Any:
        for target in self._root().targets:
            if target.wwn == name:
                return target
        return None

    def _storage_object(self, name: str, path: str) -> tuple[Any, bool]:
        """The storage object `name`, made for `path` unless it exists; and whether it
        was made here."""
        for so in self._root().storage_objects:
            if so.name == name:
                return so, False
        # A logical volume is a block backstore; a file is a fileio one, whose size
        # rtslib-fb needs.
        if path.startswith("/dev/"):
            return self._rts.BlockStorageObject(name, dev=path), True
        return self._rts.FileIOStorageObject(name, dev=path, size=os.path.getsize(path)), True

    def _tpg(self, target: Any) -> Any:
        for tpg in target.tpgs:
            if tpg.tag == TPG_TAG:
                return tpg
        return self._rts.TPG(target, TPG_TAG)

    def _save(self) -> None:
        self._root().save_to_file(self._save_file)

    async def export(self, target: str, path: str, chap: ChapCredentials | None) -> None:
        """All or nothing: what this call made is taken down again if a later step fails,
        so no target is left without its LUN."""

        def do() -> None:
            made: list[Any] = []
            try:
                configure(made)
            except Exception as exc:
                for obj in reversed(made):
                    with contextlib.suppress(Exception):
                        obj.delete()
                raise OperationFailed(f"LIO could not export {path} as {target}: {exc}",
                                      code="lio_export_failed") from exc
            self._save()

        def configure(made: list[Any]) -> None:
            rts = self._rts
            tgt = self._find_target(target)
            if tgt is None:
                tgt = rts.Target(rts.FabricModule("iscsi"), wwn=target)
                made.append(tgt)
            tpg = self._tpg(tgt)
            tpg.set_attribute("generate_node_acls", "0")
            tpg.set_attribute("demo_mode_write_protect", "1")
            tpg.set_attribute("authentication", "1" if chap else "0")
            if not list(tpg.network_portals):
                rts.NetworkPortal(tpg, self._portal[0], self._portal[1])
            if not any(lun.lun == VOLUME_LUN for lun in tpg.luns):
                so, new = self._storage_object(storage_object_name(target), path)
                if new:
                    made.append(so)
                made.append(rts.LUN(tpg, VOLUME_LUN, so))
            if chap:
                tpg.chap_userid, tpg.chap_password = chap.user, chap.password
            tpg.enable = True

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
            lun = next((lun for lun in tpg.luns if lun.lun == VOLUME_LUN), None)
            if lun is None:
                raise OperationFailed(f"target {target} has no LUN {VOLUME_LUN}: its export "
                                      "is incomplete; export it again",
                                      code="export_incomplete")
            acls = {acl.node_wwn: acl for acl in tpg.node_acls}
            if initiator not in acls:
                acl = self._rts.NodeACL(tpg, initiator)
                if tpg.chap_userid:
                    acl.chap_userid, acl.chap_password = tpg.chap_userid, tpg.chap_password
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
                so, _ = self._storage_object(storage_object_name(target), path)
                lun = rts.LUN(tpg, VOLUME_LUN, so)
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
        """Idempotent against the kernel's live configuration (an agent restart leaves it
        in place, serving): only the storage objects and targets the kernel lacks are
        brought back; what is live is left alone."""

        def do() -> None:
            root = self._root()
            try:
                with open(self._save_file) as f:
                    saved = json.load(f)
            except FileNotFoundError:
                return
            live_objects = {(so.plugin, so.name) for so in root.storage_objects}
            live_targets = {target.wwn for target in root.targets}
            missing = {
                "storage_objects": [so for so in saved.get("storage_objects", [])
                                    if (so.get("plugin"), so.get("name")) not in live_objects],
                "targets": [t for t in saved.get("targets", [])
                            if t.get("wwn") not in live_targets],
            }
            if not missing["storage_objects"] and not missing["targets"]:
                return
            for error in root.restore(missing, clear_existing=False):
                log.warning("LIO restore: %s", error)

        await self._run(do)
