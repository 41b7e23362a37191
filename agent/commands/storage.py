"""Bringing a storage directory into use on this host."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from agent import fsops
from agent.lvm import Lvm
from agent.services import AgentServices
from shared.errors import OperationFailed
from shared.protocol import PrepareStoragePayload, PrepareStorageResult

log = logging.getLogger(__name__)


def _prepare(path: str, subdirs: list[str]) -> None:
    for sub in subdirs:
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    os.makedirs(path, exist_ok=True)
    probe = fsops.temp_path(path, "write-probe")
    try:
        with open(probe, "xb") as f:
            f.write(b"strata")
            f.flush()
            os.fsync(f.fileno())
    finally:
        fsops.remove_quietly(probe)
    for directory in [path, *(os.path.join(path, sub) for sub in subdirs)]:
        removed = fsops.sweep_temp_files(directory)
        if removed:
            log.warning("removed %d leftover temporary file(s) in %s", len(removed), directory)


async def prepare_storage(
    svc: AgentServices, payload: PrepareStoragePayload, progress: Callable[[float], None]
) -> PrepareStorageResult:
    """Creates the directory, proves it is writable, clears leftovers, reports capacity."""
    try:
        await asyncio.to_thread(_prepare, payload.path, payload.subdirs)
    except OSError as exc:
        raise OperationFailed(f"storage directory {payload.path} is not usable: {exc}") from exc
    if payload.volume_group is not None:
        capacity = await Lvm(svc.executor).capacity(payload.volume_group)
    else:
        capacity = await asyncio.to_thread(fsops.capacity, payload.path)
    return PrepareStorageResult(path=payload.path, capacity=capacity)
