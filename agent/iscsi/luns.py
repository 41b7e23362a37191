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
