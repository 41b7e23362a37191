"""Worker threads per storage, so that a hung NFS server stalls only its own calls.

A blocked filesystem call cannot be interrupted: its thread stays blocked until the
server answers (or libnfs times out). What matters is that the agent's event loop, the
shared thread pool and the other storages go on, and that the caller hears of it within
the lane's timeout, with a reason that names the storage.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from shared.errors import Timeout

T = TypeVar("T")


class Lane:
    def __init__(self, name: str, timeout: float | None, workers: int = 4) -> None:
        self.name = name
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        call = asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args))
        try:
            return await asyncio.wait_for(call, self.timeout)
        except TimeoutError:
            raise Timeout(f"{self.name} did not answer within {self.timeout:g}s; "
                          "the storage server may be down or unreachable",
                          code="storage_unresponsive") from None

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """`fn` in one of the lane's threads, with no timeout: for a caller that bounds
        its own wait and must know when the thread is free again."""
        return asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
