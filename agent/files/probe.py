"""A storage health probe: a heartbeat in a storage's root, as the controller asks for
it periodically, so that a dead NFS server shows before a job touches the storage."""

from __future__ import annotations

import time

from agent.files import FileStores
from shared.errors import StrataError
from shared.protocol.host import ProbeOutcome


async def probe(files: FileStores, path: str, timeout: float) -> ProbeOutcome:
    started = time.monotonic()
    try:
        await files.for_path(path).heartbeat(path, timeout, files.mount_point_of(path))
    except StrataError as exc:
        return ProbeOutcome(path=path, healthy=False, reason=exc.message,
                            seconds=round(time.monotonic() - started, 3))
    return ProbeOutcome(path=path, healthy=True, seconds=round(time.monotonic() - started, 3))
