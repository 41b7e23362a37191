"""tgtd's admin tool, `tgtadm`.

It prints no machine-readable output, so `show` is parsed narrowly: target ids and
names, LUN numbers, ACL entries, bound accounts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agent.executor import CommandFailed, Executor

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


def parse_accounts(text: str) -> list[str]:
    """`tgtadm --op show --mode account`: the user names, indented under a header."""
    return [line.split()[0] for line in text.splitlines() if line.startswith(" ")
            and line.strip()]


class TgtadmFailed(CommandFailed):
    pass


class Tgtadm:
    def __init__(self, executor: Executor, control_port: int | None = None,
                 timeout: float = 30) -> None:
        self._exec = executor
        self._control = ["-C", str(control_port)] if control_port is not None else []
        self._timeout = timeout

    async def _run(self, *args: str, redact: tuple[str, ...] = ()) -> str:
        result = await self._exec.run(["tgtadm", *self._control, "--lld", "iscsi", *args],
                                      timeout=self._timeout, check=False, redact=redact)
        return result.check(TgtadmFailed).stdout

    async def targets(self) -> dict[str, TargetState]:
        return parse_show(await self._run("--op", "show", "--mode", "target"))

    async def accounts(self) -> list[str]:
        return parse_accounts(await self._run("--op", "show", "--mode", "account"))

    async def new_target(self, tid: int, name: str) -> None:
        await self._run("--op", "new", "--mode", "target", "--tid", str(tid), "-T", name)

    async def delete_target(self, tid: int) -> None:
        """With its LUNs, ACLs and account bindings, even while initiators are logged in."""
        await self._run("--op", "delete", "--mode", "target", "--tid", str(tid), "--force")

    async def new_lun(self, tid: int, lun: int, path: str) -> None:
        await self._run("--op", "new", "--mode", "logicalunit", "--tid", str(tid),
                        "--lun", str(lun), "-b", path)

    async def delete_lun(self, tid: int, lun: int) -> None:
        """tgtd reads a backing store's size when the LUN is made: deleting and making it
        again is how a grown store is served at its new size."""
        await self._run("--op", "delete", "--mode", "logicalunit", "--tid", str(tid),
                        "--lun", str(lun))

    async def new_account(self, user: str, password: str) -> None:
        """tgtadm takes the CHAP secret only as an argument; it is kept out of the log."""
        await self._run("--op", "new", "--mode", "account", "--user", user,
                        "--password", password, redact=(password,))

    async def delete_account(self, user: str) -> None:
        await self._run("--op", "delete", "--mode", "account", "--user", user)

    async def bind_account(self, tid: int, user: str) -> None:
        await self._run("--op", "bind", "--mode", "account", "--tid", str(tid), "--user", user)

    async def bind_initiator(self, tid: int, initiator: str) -> None:
        await self._run("--op", "bind", "--mode", "target", "--tid", str(tid),
                        "--initiator-name", initiator)

    async def unbind_initiator(self, tid: int, initiator: str) -> None:
        await self._run("--op", "unbind", "--mode", "target", "--tid", str(tid),
                        "--initiator-name", initiator)
