"""LVM, for volumes that are block devices: one logical volume per volume in the volume
group the operator named. Reports are read as JSON (`--reportformat json`)."""

from __future__ import annotations

import json
from typing import Any

from agent.executor import Executor
from shared.errors import NotFound, OperationFailed
from shared.protocol.types import FsCapacity


class Lvm:
    def __init__(self, executor: Executor, timeout: float = 120) -> None:
        self._exec = executor
        self._timeout = timeout

    async def _report(self, *argv: str) -> Any:
        result = await self._exec.run([*argv, "--reportformat", "json", "--units", "b",
                                       "--nosuffix"], timeout=self._timeout)
        try:
            return json.loads(result.stdout)["report"][0]
        except (ValueError, KeyError, IndexError) as exc:
            raise OperationFailed(f"{argv[0]} gave an unreadable report") from exc

    @staticmethod
    def path(vg: str, lv: str) -> str:
        return f"/dev/{vg}/{lv}"

    async def lv_exists(self, vg: str, lv: str) -> bool:
        report = await self._report("lvs", "-o", "lv_name", vg)
        return any(row["lv_name"] == lv for row in report.get("lv", []))

    async def create(self, vg: str, lv: str, size: int) -> str:
        """A new LV, zeroed so nothing of an earlier volume on those extents shows through."""
        await self._exec.run(["lvcreate", "--yes", "--wipesignatures", "y", "-n", lv,
                              "-L", f"{size}b", vg], timeout=self._timeout)
        path = self.path(vg, lv)
        try:
            await self._exec.run(["blkdiscard", "--zeroout", path], timeout=3600)
        except OperationFailed:
            await self.remove(vg, lv)
            raise
        return path

    async def remove(self, vg: str, lv: str) -> bool:
        """Idempotent: an LV that is already gone is a success (False)."""
        if not await self.lv_exists(vg, lv):
            return False
        await self._exec.run(["lvremove", "--yes", f"{vg}/{lv}"], timeout=self._timeout)
        return True

    async def capacity(self, vg: str) -> FsCapacity:
        rows = (await self._report("vgs", "-o", "vg_size,vg_free", vg)).get("vg", [])
        if not rows:
            raise NotFound(f"volume group {vg} does not exist")
        return FsCapacity(total=int(rows[0]["vg_size"]), available=int(rows[0]["vg_free"]))
