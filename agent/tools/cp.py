"""coreutils `cp`, for the cheapest copy a filesystem allows."""

from __future__ import annotations

from agent.executor import CommandFailed, Executor


class CopyFailed(CommandFailed):
    pass


async def copy_sparse(executor: Executor, src: str, dest: str, *,
                      timeout: float = 3600) -> None:
    """A reflink where the filesystem supports it, else a copy that leaves holes for
    runs of zeroes."""
    result = await executor.run(["cp", "--reflink=auto", "--sparse=always", src, dest],
                                timeout=timeout, check=False)
    result.check(CopyFailed)
