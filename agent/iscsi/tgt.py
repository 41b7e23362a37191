"""The `tgt` target driver: the userspace tgtd, driven through `tgtadm`.

tgtadm prints no machine-readable output, so `show` is parsed narrowly (target ids and
names, LUN numbers, ACL entries). tgtd keeps its configuration in memory only: this
driver saves what it set up to a JSON file after every change and replays it on start.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import asdict, dataclass, field

from agent.executor import Executor
from agent.iscsi.target import VOLUME_LUN, TargetDriver
from shared.errors import OperationFailed
from shared.protocol.iscsi import ChapCredentials

_TARGET_RE = re.compile(r"^Target (\d+): (\S+)$")
_LUN_RE = re.compile(r"^\s+LUN: (\d+)$")
_ACL_HEADER = "ACL information:"
_ACCOUNT_HEADER = "Account information:"


@dataclass
class TargetState:
    tid: int
    luns: set[int] = field(default_factory=set)
    acls: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)


def parse_show(text: str) -> dict[str, TargetState]:
    """`tgtadm --op show --mode target` -> {target name: state}."""
    targets: dict[str, TargetState] = {}
    current: TargetState | None = None
    section = ""
    for line in text.splitlines():
        if m := _TARGET_RE.match(line):
            current = targets[m.group(2)] = TargetState(tid=int(m.group(1)))
            section = ""
            continue
        if current is None:
            continue
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("        "):
            section = stripped
            continue
        if m := _LUN_RE.match(line):
            current.luns.add(int(m.group(1)))
        elif section == _ACL_HEADER and stripped:
            current.acls.append(stripped)
        elif section == _ACCOUNT_HEADER and stripped:
            current.accounts.append(stripped.split()[0])
    return targets


@dataclass
class _Export:
    path: str
    chap: dict[str, str] | None
    initiators: list[str]


class TgtDriver(TargetDriver):
    def __init__(self, executor: Executor, state_file: str, control_port: int | None = None,
                 timeout: float = 30) -> None:
        self._exec = executor
        self._state_file = state_file
        self._control = ["-C", str(control_port)] if control_port is not None else []
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._exports: dict[str, _Export] = self._load()

    async def _tgtadm(self, *args: str, redact: tuple[str, ...] = ()) -> str:
        result = await self._exec.run(["tgtadm", *self._control, "--lld", "iscsi", *args],
                                      timeout=self._timeout, redact=redact)
        return result.stdout

    async def _show(self) -> dict[str, TargetState]:
        return parse_show(await self._tgtadm("--op", "show", "--mode", "target"))

    async def export(self, target: str, path: str, chap: ChapCredentials | None) -> None:
        async with self._lock:
            export = self._exports.get(target) or _Export(
                path, chap.model_dump() if chap else None, [])
            await self._apply(target, export)
            self._exports[target] = export
            self._save()

    async def _apply(self, target: str, export: _Export) -> None:
        shown = await self._show()
        state = shown.get(target)
        if state is None:
            tid = max((t.tid for t in shown.values()), default=0) + 1
            await self._tgtadm("--op", "new", "--mode", "target", "--tid", str(tid),
                               "-T", target)
            state = TargetState(tid=tid)
        tid_arg = str(state.tid)
        if VOLUME_LUN not in state.luns:
            await self._tgtadm("--op", "new", "--mode", "logicalunit", "--tid", tid_arg,
                               "--lun", str(VOLUME_LUN), "-b", export.path)
        if export.chap and export.chap["user"] not in state.accounts:
            accounts = await self._tgtadm("--op", "show", "--mode", "account")
            if export.chap["user"] not in accounts.split():
                await self._tgtadm("--op", "new", "--mode", "account",
                                   "--user", export.chap["user"],
                                   "--password", export.chap["password"],
                                   redact=(export.chap["password"],))
            await self._tgtadm("--op", "bind", "--mode", "account", "--tid", tid_arg,
                               "--user", export.chap["user"])
        for initiator in export.initiators:
            if initiator not in state.acls:
                await self._tgtadm("--op", "bind", "--mode", "target", "--tid", tid_arg,
                                   "--initiator-name", initiator)

    async def unexport(self, target: str) -> None:
        async with self._lock:
            state = (await self._show()).get(target)
            if state is not None:
                await self._tgtadm("--op", "delete", "--mode", "target", "--tid",
                                   str(state.tid), "--force")
            export = self._exports.pop(target, None)
            if export is not None and export.chap:
                await self._delete_account_if_unused(export.chap["user"])
            self._save()

    async def _delete_account_if_unused(self, user: str) -> None:
        if any(e.chap and e.chap["user"] == user for e in self._exports.values()):
            return
        accounts = await self._tgtadm("--op", "show", "--mode", "account")
        if user in accounts.split():
            await self._tgtadm("--op", "delete", "--mode", "account", "--user", user)

    async def grant(self, target: str, initiator: str) -> list[str]:
        async with self._lock:
            state = await self._existing(target)
            if initiator not in state.acls:
                await self._tgtadm("--op", "bind", "--mode", "target", "--tid", str(state.tid),
                                   "--initiator-name", initiator)
            export = self._exports[target]
            if initiator not in export.initiators:
                export.initiators.append(initiator)
            self._save()
            return list(export.initiators)

    async def revoke(self, target: str, initiator: str) -> list[str]:
        async with self._lock:
            state = (await self._show()).get(target)
            if state is not None and initiator in state.acls:
                await self._tgtadm("--op", "unbind", "--mode", "target", "--tid",
                                   str(state.tid), "--initiator-name", initiator)
            export = self._exports.get(target)
            if export is None:
                return []
            if initiator in export.initiators:
                export.initiators.remove(initiator)
            self._save()
            return list(export.initiators)

    async def _existing(self, target: str) -> TargetState:
        state = (await self._show()).get(target)
        if state is None or target not in self._exports:
            raise OperationFailed(f"target {target} is not exported here", code="no_such_target")
        return state

    async def restore(self) -> None:
        async with self._lock:
            for target, export in self._exports.items():
                await self._apply(target, export)

    def _load(self) -> dict[str, _Export]:
        try:
            with open(self._state_file) as f:
                return {t: _Export(**e) for t, e in json.load(f).items()}
        except FileNotFoundError:
            return {}

    def _save(self) -> None:
        tmp = f"{self._state_file}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({t: asdict(e) for t, e in self._exports.items()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._state_file)
