"""What a storage holds, for the controller to compare with what it knows: the files of
the directories it names, and the `strata-` logical volumes of a volume group."""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Callable

from agent import fsops
from agent.commands.registry import handles
from agent.files.base import FileStat
from agent.images.formats import QCOW2_MAGIC
from agent.services import AgentServices
from agent.tools.lvm import LvInfo, Lvm
from shared.errors import NotFound
from shared.names import TEMP_PREFIX
from shared.protocol.objects import (
    LIST_OBJECTS,
    QUARANTINE_DIR,
    QUARANTINE_OBJECTS,
    ListObjectsPayload,
    ObjectDir,
    ObjectList,
    QuarantinePayload,
    QuarantineResult,
    QuarantineSkip,
    StoreObject,
)

LV_PREFIX = "strata-"


def file_object(directory: ObjectDir, found: FileStat) -> StoreObject:
    """A temporary file is reported as such, without a format: it may be half written.
    Else the format and virtual size come from the head: a qcow2 header's size field
    (at byte 24), or a raw file's length."""
    path = posixpath.join(directory.subdir, found.name) if directory.subdir else found.name
    if found.name.startswith(TEMP_PREFIX):
        return StoreObject(path=path, kind="temporary", size=found.allocated)
    if found.head[:4] == QCOW2_MAGIC and len(found.head) >= 32:
        virtual_size, = struct.unpack_from(">Q", found.head, 24)
        return StoreObject(path=path, kind=directory.kind, size=found.allocated,
                           virtual_size=virtual_size, format="qcow2")
    return StoreObject(path=path, kind=directory.kind, size=found.allocated,
                       virtual_size=found.size, format="raw")


def lv_object(lv: LvInfo) -> StoreObject:
    """A logical volume with an origin is a snapshot (LVM makes volumes whole or not at
    all, so none is temporary). The size is the volume's: a thin one takes less of its
    pool, which `lvs` reports as a percentage only."""
    return StoreObject(path=lv.lv_name, place="lv", kind="snapshot" if lv.origin else "volume",
                       size=lv.lv_size,
                       virtual_size=lv.lv_size, format="raw")


@handles(LIST_OBJECTS)
async def list_objects(svc: AgentServices, payload: ListObjectsPayload,
                       progress: Callable[[float], None]) -> ObjectList:
    """Only regular files directly in each directory; a missing directory holds none."""
    files = svc.files.for_path(payload.root)
    objects = []
    for directory in payload.dirs:
        path = (posixpath.join(payload.root, directory.subdir) if directory.subdir
                else payload.root)
        found = sorted(await files.scan(path), key=lambda f: f.name)
        objects += [file_object(directory, f) for f in found]
    if payload.volume_group is None:
        return ObjectList(objects=objects, capacity=await files.capacity(payload.root))
    lvm = Lvm(svc.executor)
    capacity = await lvm.capacity(payload.volume_group)
    objects += [lv_object(lv) for lv in await lvm.lvs(payload.volume_group)
                if lv.lv_name.startswith(LV_PREFIX)]
    return ObjectList(objects=objects, capacity=capacity)


@handles(QUARANTINE_OBJECTS)
async def quarantine_objects(svc: AgentServices, payload: QuarantinePayload,
                             progress: Callable[[float], None]) -> QuarantineResult:
    """Moves each file into `quarantine/<its directory>/` of the same store, by link and
    unlink, so nothing is copied or lost; a name taken there gets a numbered suffix. A
    temporary file a running task of this agent still writes is skipped, as is a file
    that is gone. Safe to repeat: what was moved is no longer there to move."""
    files = svc.files.for_path(payload.root)
    moved: dict[str, str] = {}
    skipped: list[QuarantineSkip] = []
    for i, path in enumerate(payload.paths):
        directory, name = path.split("/", 1)
        if name.startswith(TEMP_PREFIX) and not fsops.is_leftover(
                name, svc.running_tasks()):
            skipped.append(QuarantineSkip(path=path, reason="a running task writes it"))
            continue
        target_dir = posixpath.join(QUARANTINE_DIR, directory)
        # One level at a time: NFS servers refuse to mount a missing directory's parent.
        await files.makedirs(posixpath.join(payload.root, QUARANTINE_DIR))
        await files.makedirs(posixpath.join(payload.root, target_dir))
        taken = {f.name for f in await files.scan(posixpath.join(payload.root, target_dir))}
        target = next(posixpath.join(target_dir, candidate) for n in range(len(taken) + 1)
                      if (candidate := name if n == 0 else f"{name}.{n}") not in taken)
        try:
            await files.move(payload.root, path, target)
        except NotFound:
            skipped.append(QuarantineSkip(path=path, reason="not found (or no regular file)"))
            continue
        moved[path] = target
        progress(100.0 * (i + 1) / len(payload.paths))
    return QuarantineResult(moved=moved, skipped=skipped)
