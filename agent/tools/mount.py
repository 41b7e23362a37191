"""mount(8), umount(8) and findmnt(8) for kernel NFS mounts, after VDSM's
`storage/mount.py`. findmnt is read as JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from agent.executor import CommandFailed, Executor
from shared.errors import Timeout

ALREADY_MOUNTED = "already mounted"


class MountInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    target: str
    source: str
    fstype: str
    options: str


class _Findmnt(BaseModel):
    filesystems: list[MountInfo]


class MountFailed(CommandFailed):
    default_code = "mount_failed"


class AlreadyMounted(MountFailed):
    """mount(8) found something mounted there already (which, it does not say)."""


class MountTimeout(Timeout):
    default_code = "mount_timeout"


class UnmountFailed(CommandFailed):
    default_code = "unmount_failed"


async def findmnt(executor: Executor, mount_point: str, *, timeout: float) -> MountInfo | None:
    """What is mounted on `mount_point`, if anything."""
    res = await executor.run(["findmnt", "--json", "--output", "TARGET,SOURCE,FSTYPE,OPTIONS",
                              "--mountpoint", mount_point], timeout=timeout, check=False)
    if res.returncode != 0 or not res.stdout.strip():
        return None
    try:
        return _Findmnt.model_validate_json(res.stdout).filesystems[0]
    except (ValidationError, IndexError):
        raise CommandFailed(res, f"findmnt gave unreadable output for {mount_point}") from None


async def mount_nfs(executor: Executor, source: str, mount_point: str, options: list[str], *,
                    timeout: float) -> None:
    argv = ["mount", "-t", "nfs", "-o", ",".join(options), source, mount_point]
    try:
        res = await executor.run(argv, timeout=timeout, check=False)
    except Timeout:
        raise MountTimeout(f"mounting {source} did not finish within {timeout:g}s; "
                           "is the NFS server reachable?") from None
    if res.returncode != 0:
        error = AlreadyMounted if ALREADY_MOUNTED in res.stderr else MountFailed
        raise error(res, f"cannot mount {source} on {mount_point}: "
                         f"{res.stderr.strip() or f'exit code {res.returncode}'}")


async def umount(executor: Executor, mount_point: str, *, lazy: bool, timeout: float) -> None:
    """`lazy` detaches at once and cleans up when no longer busy: the only way out of a
    hung NFS mount."""
    res = await executor.run(["umount", *(["-l"] if lazy else []), mount_point],
                             timeout=timeout, check=False)
    if res.returncode != 0:
        raise UnmountFailed(res, f"cannot unmount {mount_point}: {res.stderr.strip()}")
