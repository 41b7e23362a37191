"""The `tgt` target driver: the userspace tgtd, driven through `tools/tgtadm`.

Every call compares what tgtd shows with what is wanted and does only the difference,
so repeating a call, or replaying the saved exports after a tgtd restart, is safe.
"""

from __future__ import annotations

import asyncio

from agent.executor import Executor
from agent.iscsi import tgt_exports
from agent.iscsi.target import VOLUME_LUN, TargetDriver
from agent.iscsi.tgt_exports import Export
from agent.tools.tgtadm import TargetState, Tgtadm
from shared.errors import OperationFailed
from shared.protocol.iscsi import ChapCredentials


class TgtDriver(TargetDriver):
    def __init__(self, executor: Executor, state_file: str, control_port: int | None = None,
                 timeout: float = 30) -> None:
        self._tgtadm = Tgtadm(executor, control_port, timeout)
        self._state_file = state_file
        self._lock = asyncio.Lock()
        self._exports = tgt_exports.load(state_file)

    def _save(self) -> None:
        tgt_exports.save(self._state_file, self._exports)

    async def export(self, target: str, path: str, chap: ChapCredentials | None) -> None:
        async with self._lock:
            export = self._exports.get(target) or Export(
                path, chap.model_dump() if chap else None, [])
            await self._apply(target, export)
            self._exports[target] = export
            self._save()

    async def _apply(self, target: str, export: Export) -> None:
        shown = await self._tgtadm.targets()
        state = shown.get(target)
        if state is None:
            tid = max((t.tid for t in shown.values()), default=0) + 1
            await self._tgtadm.new_target(tid, target)
            state = TargetState(tid=tid)
        if VOLUME_LUN not in state.luns:
            await self._tgtadm.new_lun(state.tid, VOLUME_LUN, export.path)
        if export.chap and export.chap["user"] not in state.accounts:
            if export.chap["user"] not in await self._tgtadm.accounts():
                await self._tgtadm.new_account(export.chap["user"], export.chap["password"])
            await self._tgtadm.bind_account(state.tid, export.chap["user"])
        for initiator in export.initiators:
            if initiator not in state.acls:
                await self._tgtadm.bind_initiator(state.tid, initiator)

    async def unexport(self, target: str) -> None:
        async with self._lock:
            state = (await self._tgtadm.targets()).get(target)
            if state is not None:
                await self._tgtadm.delete_target(state.tid)
            export = self._exports.pop(target, None)
            if export is not None and export.chap:
                await self._delete_account_if_unused(export.chap["user"])
            self._save()

    async def _delete_account_if_unused(self, user: str) -> None:
        if any(e.chap and e.chap["user"] == user for e in self._exports.values()):
            return
        if user in await self._tgtadm.accounts():
            await self._tgtadm.delete_account(user)

    async def grant(self, target: str, initiator: str) -> list[str]:
        async with self._lock:
            state = await self._existing(target)
            if initiator not in state.acls:
                await self._tgtadm.bind_initiator(state.tid, initiator)
            export = self._exports[target]
            if initiator not in export.initiators:
                export.initiators.append(initiator)
            self._save()
            return list(export.initiators)

    async def revoke(self, target: str, initiator: str) -> list[str]:
        async with self._lock:
            state = (await self._tgtadm.targets()).get(target)
            if state is not None and initiator in state.acls:
                await self._tgtadm.unbind_initiator(state.tid, initiator)
            export = self._exports.get(target)
            if export is None:
                return []
            if initiator in export.initiators:
                export.initiators.remove(initiator)
            self._save()
            return list(export.initiators)

    async def _existing(self, target: str) -> TargetState:
        state = (await self._tgtadm.targets()).get(target)
        if state is None or target not in self._exports:
            raise OperationFailed(f"target {target} is not exported here", code="no_such_target")
        return state

    async def detach_lun(self, target: str) -> None:
        async with self._lock:
            await self._detach(await self._existing(target))

    async def _detach(self, state: TargetState) -> None:
        if VOLUME_LUN in state.luns:
            await self._tgtadm.delete_lun(state.tid, VOLUME_LUN)

    async def attach_lun(self, target: str, path: str) -> None:
        """The saved export keeps the target: a restart in between serves the LUN again."""
        async with self._lock:
            await self._attach(target, path)

    async def _attach(self, target: str, path: str) -> None:
        export = self._exports.get(target)
        if export is None:
            raise OperationFailed(f"target {target} is not exported here", code="no_such_target")
        export.path = path
        await self._apply(target, export)
        self._save()

    async def refresh_lun(self, target: str, path: str) -> None:
        """In one hold of the lock, so no grant or restore sees the LUN missing."""
        async with self._lock:
            await self._detach(await self._existing(target))
            await self._attach(target, path)

    async def restore(self) -> None:
        async with self._lock:
            for target, export in self._exports.items():
                await self._apply(target, export)
