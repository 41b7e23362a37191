"""LVM's tools, and `blkdiscard` for the logical volumes they make. Reports are read as
JSON (`--reportformat json`), sizes in bytes."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from agent.executor import CommandFailed, Executor, Result
from shared.errors import NotFound
from shared.protocol.types import FsCapacity

SECTOR = 512


def size_arg(size: int) -> str:
    """A byte size for `-L`: LVM takes only whole 512-byte sectors ("Size is not a
    multiple of 512"), so it is rounded up, as LVM rounds up to extents anyway."""
    return f"{-(-size // SECTOR) * SECTOR}b"


class LvmFailed(CommandFailed):
    pass


class VolumeGroupNotFound(NotFound):
    pass


class _Lv(BaseModel):
    lv_name: str


class LvInfo(BaseModel):
    """One logical volume: `origin` is set for a snapshot, `pool_lv` for a thin volume."""

    lv_name: str
    lv_size: int
    origin: str = ""
    pool_lv: str = ""

    @property
    def thin(self) -> bool:
        return bool(self.pool_lv)


class _Vg(BaseModel):
    vg_size: int
    vg_free: int


class _Report(BaseModel):
    lv: list[_Lv] = []
    vg: list[_Vg] = []


class _Reports(BaseModel):
    report: list[_Report]


class _InfoReport(BaseModel):
    lv: list[LvInfo] = []


class _InfoReports(BaseModel):
    report: list[_InfoReport]


class Lvm:
    def __init__(self, executor: Executor, timeout: float = 120) -> None:
        self._exec = executor
        self._timeout = timeout

    async def _run(self, *argv: str, timeout: float | None = None) -> Result:
        result = await self._exec.run(argv, timeout=self._timeout if timeout is None else timeout,
                                      check=False)
        return result.check(LvmFailed)

    async def _report(self, *argv: str) -> _Report:
        result = await self._run(*argv, "--reportformat", "json", "--units", "b", "--nosuffix")
        try:
            return _Reports.model_validate_json(result.stdout).report[0]
        except (ValidationError, IndexError):
            raise LvmFailed(result, f"{argv[0]} gave an unreadable report") from None

    @staticmethod
    def path(vg: str, lv: str) -> str:
        return f"/dev/{vg}/{lv}"

    async def lv_exists(self, vg: str, lv: str) -> bool:
        report = await self._report("lvs", "-o", "lv_name", vg)
        return any(row.lv_name == lv for row in report.lv)

    async def capacity(self, vg: str) -> FsCapacity:
        rows = (await self._report("vgs", "-o", "vg_size,vg_free", vg)).vg
        if not rows:
            raise VolumeGroupNotFound(f"volume group {vg} does not exist")
        return FsCapacity(total=rows[0].vg_size, available=rows[0].vg_free)

    async def lvcreate(self, vg: str, lv: str, size: int) -> str:
        """The new LV's device path, of at least `size` bytes. `--wipesignatures` clears
        old signatures only."""
        await self._run("lvcreate", "--yes", "--wipesignatures", "y", "-n", lv,
                        "-L", size_arg(size), vg)
        return self.path(vg, lv)

    async def lvremove(self, vg: str, lv: str) -> None:
        await self._run("lvremove", "--yes", f"{vg}/{lv}")

    async def zero_out(self, device: str) -> None:
        """Writes zeroes over the whole device (offloaded where the storage can)."""
        await self._run("blkdiscard", "--zeroout", device, timeout=3600)

    async def lvs(self, vg: str) -> list[LvInfo]:
        result = await self._run("lvs", "-o", "lv_name,lv_size,origin,pool_lv", vg,
                                 "--reportformat", "json", "--units", "b", "--nosuffix")
        try:
            return _InfoReports.model_validate_json(result.stdout).report[0].lv
        except (ValidationError, IndexError):
            raise LvmFailed(result, "lvs gave an unreadable report") from None

    async def lv_info(self, vg: str, lv: str) -> LvInfo | None:
        return next((row for row in await self.lvs(vg) if row.lv_name == lv), None)

    async def lvextend(self, vg: str, lv: str, size: int) -> None:
        """LVM rounds `size` up to whole extents."""
        await self._run("lvextend", "--yes", "-L", size_arg(size), f"{vg}/{lv}")

    async def snapshot(self, vg: str, origin: str, name: str, cow_size: int | None) -> str:
        """A thick snapshot with `cow_size` bytes for changed blocks, or (None) a thin one,
        made activatable so that it can be read and merged like a thick one."""
        size = ["-L", size_arg(cow_size)] if cow_size is not None else ["--setactivationskip", "n"]
        await self._run("lvcreate", "--yes", "-s", "-n", name, *size, f"{vg}/{origin}")
        return self.path(vg, name)

    async def merge(self, vg: str, snapshot: str) -> None:
        """Rolls the origin back to `snapshot`, which the merge consumes. With the origin
        closed the merge runs now, and lvconvert waits for it."""
        await self._run("lvconvert", "--yes", "--interval", "1", "--merge", f"{vg}/{snapshot}",
                        timeout=3600)
