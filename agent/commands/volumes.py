"""Volumes: linked clones of an image cache, empty volumes, deletion."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from agent import fsops
from agent.services import AgentServices
from shared.errors import Conflict, InvalidInput, NotFound
from shared.protocol import (
    CreateVolumePayload,
    DeleteFilePayload,
    DeleteFileResult,
    VolumeFacts,
)


def _check_create(payload: CreateVolumePayload, final: str) -> None:
    if os.path.lexists(final):
        raise Conflict(f"{final} already exists; a ready object is never overwritten")
    if payload.backing is None and payload.size is None:
        raise InvalidInput("an empty volume needs a size")
    if payload.backing is not None and not os.path.isfile(payload.backing.path):
        raise NotFound(f"backing file {payload.backing.path} does not exist")
    os.makedirs(payload.dest_dir, exist_ok=True)


async def create_volume(
    svc: AgentServices, payload: CreateVolumePayload, progress: Callable[[float], None]
) -> VolumeFacts:
    final = os.path.join(payload.dest_dir, payload.file_name)
    await asyncio.to_thread(_check_create, payload, final)
    tmp = fsops.temp_path(payload.dest_dir, payload.file_name)
    try:
        await svc.qemu_img.create(
            tmp, fmt="qcow2", size=payload.size,
            backing=payload.backing.path if payload.backing else None,
            backing_fmt=payload.backing.format if payload.backing else None,
        )
        await asyncio.to_thread(fsops.publish, tmp, final)
    finally:
        await asyncio.to_thread(fsops.remove_quietly, tmp)
    virtual_size = payload.size
    if virtual_size is None:
        info = await svc.qemu_img.info(final, fmt="qcow2")
        virtual_size = int(info["virtual-size"])
    capacity = await asyncio.to_thread(fsops.capacity, payload.dest_dir)
    return VolumeFacts(path=final, virtual_size=virtual_size, capacity=capacity)


async def delete_file(
    svc: AgentServices, payload: DeleteFilePayload, progress: Callable[[float], None]
) -> DeleteFileResult:
    """Idempotent: a file that is already gone is a success, reported as such."""
    return await asyncio.to_thread(_delete, os.path.join(payload.dir, payload.file_name))


def _delete(path: str) -> DeleteFileResult:
    existed = os.path.lexists(path)
    fsops.remove_quietly(path)
    return DeleteFileResult(existed=existed, capacity=fsops.capacity(os.path.dirname(path)))
