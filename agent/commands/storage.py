"""Bringing a storage directory into use on this host."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable

from agent.commands.registry import handles
from agent.services import AgentServices
from agent.tools.lvm import Lvm
from shared.protocol.files import PREPARE_STORAGE, PrepareStoragePayload, PrepareStorageResult

log = logging.getLogger(__name__)


@handles(PREPARE_STORAGE)
async def prepare_storage(
    svc: AgentServices, payload: PrepareStoragePayload, progress: Callable[[float], None]
) -> PrepareStorageResult:
    """Creates the directories, proves the storage takes a durable write (the heartbeat
    file), clears leftovers of interrupted work (sparing what may be written from
    another host: the controller names it), and reports capacity."""
    files = svc.files.for_path(payload.path)
    directories = [payload.path, *(posixpath.join(payload.path, s) for s in payload.subdirs)]
    for directory in directories:
        await files.makedirs(directory)
    await files.write_probe(payload.path)
    for directory in directories:
        removed = await files.sweep_temp_files(directory, svc.running_tasks,
                                               payload.in_flight, svc.task_ended)
        if removed:
            log.warning("removed %d leftover temporary file(s) in %s", len(removed), directory)
    if payload.volume_group is not None:
        capacity = await Lvm(svc.executor).capacity(payload.volume_group)
    else:
        capacity = await files.capacity(payload.path)
    return PrepareStorageResult(path=payload.path, capacity=capacity)
