"""A LUN's life on the storage server: its backing store made (empty, or a copy of an
image), served as LUN 1 of a target of its own, and taken down target first. An export
that fails leaves neither target nor backing store behind."""

from __future__ import annotations

from agent.iscsi.backing import Backing, Progress
from agent.iscsi.target import TargetDriver
from shared.protocol.iscsi import ExportLunPayload
from shared.protocol.types import FsCapacity


async def export(driver: TargetDriver, backing: Backing, payload: ExportLunPayload,
                 progress: Progress) -> tuple[str, FsCapacity]:
    """The backing store's path, and the capacity left where it was made."""
    path = await backing.create(payload.file_name, payload.size, payload.source, progress)
    capacity = await backing.capacity()
    try:
        await driver.export(payload.target, path, payload.chap)
    except BaseException:
        await driver.unexport(payload.target)
        await backing.remove(payload.file_name)
        raise
    return path, capacity


async def unexport(driver: TargetDriver, backing: Backing, target: str,
                   file_name: str) -> tuple[bool, FsCapacity]:
    """Removing the target drops every grant before the backing store goes; whether the
    store existed, and the capacity left."""
    await driver.unexport(target)
    return await backing.remove(file_name), await backing.capacity()


async def resize(driver: TargetDriver, backing: Backing, target: str, name: str,
                 size: int) -> tuple[str, int, FsCapacity]:
    """Grows the backing store, then has the target serve the new size (a store that
    had grown already is served again all the same, so a retry finishes the job)."""
    new_size = await backing.resize(name, size)
    path = backing.path_of(name)
    await driver.refresh_lun(target, path)
    return path, new_size, await backing.capacity()


async def revert(driver: TargetDriver, backing: Backing, target: str, name: str,
                 snapshot_dir: str, snapshot_name: str) -> tuple[str, int, FsCapacity]:
    """The target (and its grants) stays; its LUN is down while the store is replaced,
    and served again whatever happened, so a failure leaves the old data served."""
    path = backing.path_of(name)
    detached = False

    async def detach() -> None:
        nonlocal detached
        detached = True
        await driver.detach_lun(target)

    try:
        size = await backing.revert(name, snapshot_dir, snapshot_name, detach)
    finally:
        if detached:
            await driver.attach_lun(target, path)
    return path, size, await backing.capacity()
