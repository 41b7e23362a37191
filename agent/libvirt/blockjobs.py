"""Waiting for, pivoting and aborting a libvirt block job (commit, active commit, copy)
on one disk of a running domain.

The caller starts the job (`Libvirt.block_commit`, or a block copy) and names it with a
`BlockJob`: the domain, the disk's target name, and `leaves`, the image that is out of
the disk's chain once the job's work is in (the merged layer of an intermediate commit,
the old top of an active commit or of a copy). That one image is how the outcome is
judged, whoever watched the job end: libvirtd may restart, or this agent may ask again,
after the job is gone.

- `wait` polls the job, reports its progress (percent of its bytes), and returns
  `READY` for a mirroring job (active commit, copy) whose two sides are in sync, which
  waits for `pivot` or `abort`, or `DONE` once the job is gone and `leaves` is out of the
  chain.
- `pivot` switches a ready job onto its new image and returns once it has.
- `abort` ends a job without its work; it returns whether the work landed anyway (the
  job had finished first).

Errors: `BlockJobFailed` (the job is gone and `leaves` is still in the chain: it failed
or was aborted elsewhere; the disk reads what it read before), `DomainVanished` (the
domain went away mid-job), `BlockJobTimeout` (not there by the deadline; the job is left
as it is, for the caller to abort), `LibvirtUnavailable` (libvirtd did not answer for
longer than `reconnect` seconds). A libvirtd restart within that grace is waited out:
the daemon reads its jobs back from QEMU when it starts, so the job is found again, or
found gone with its outcome in the domain's XML.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

import libvirt

from agent.libvirt import disks
from agent.tools.libvirt import (
    BlockJobInfo,
    DomainNotFound,
    Libvirt,
    LibvirtInvalid,
    LibvirtUnavailable,
)
from shared.errors import OperationFailed, Timeout

Progress = Callable[[float], None]

# Job types that mirror: they reach READY and end only by a pivot or an abort.
_MIRRORING = frozenset({libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY,
                        libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT})


class BlockJobFailed(OperationFailed):
    default_code = "block_job_failed"


class BlockJobTimeout(Timeout):
    default_code = "block_job_timeout"


class DomainVanished(OperationFailed):
    default_code = "domain_vanished"


class Outcome(StrEnum):
    READY = "ready"
    DONE = "done"


@dataclass(frozen=True)
class BlockJob:
    domain: str
    disk: str
    leaves: str

    def __str__(self) -> str:
        return f"the block job on {self.disk} of domain {self.domain}"


@dataclass(frozen=True)
class _Seen:
    info: BlockJobInfo | None
    chain: list[str]
    mirroring: bool  # the disk's XML still shows a `<mirror>` (a job libvirt tracks)

    @property
    def gone(self) -> bool:
        return self.info is None and not self.mirroring

    def ready(self) -> bool:
        info = self.info
        return (info is not None and info.type in _MIRRORING and info.end > 0
                and info.cur == info.end)


class BlockJobs:
    """`poll`: seconds between looks; `settle`: how long a job must stay gone with its
    work missing before that counts as a failure (libvirt may drop the job a moment
    before it rewrites the disk's chain); `reconnect`: how long libvirtd may be away."""

    def __init__(self, lv: Libvirt, *, poll: float = 0.2, settle: float = 1.0,
                 reconnect: float = 120.0) -> None:
        self._lv = lv
        self._poll = poll
        self._settle = settle
        self._reconnect = reconnect

    async def chain(self, domain: str, disk: str) -> list[str]:
        """The disk's images, top first, as the domain has them open now; a libvirtd
        restart (a job may end just before one) is waited out, as in `wait`."""
        away_since = time.monotonic()
        while True:
            try:
                return (await self._look(BlockJob(domain, disk, ""))).chain
            except LibvirtUnavailable:
                if time.monotonic() - away_since > self._reconnect:
                    raise
                await asyncio.sleep(self._poll)

    async def _look(self, job: BlockJob) -> _Seen:
        try:
            try:
                info = await self._lv.block_job_info(job.domain, job.disk)
            except LibvirtInvalid:
                if (await self._lv.domain_state(job.domain))[1]:
                    raise
                raise DomainNotFound(f"domain {job.domain} is not running") from None
            xml = await self._lv.domain_xml(job.domain)
        except DomainNotFound:
            raise DomainVanished(f"domain {job.domain} stopped or disappeared during "
                                 f"{job}; its images are left as they were") from None
        for disk in disks.parse(xml).iterfind("devices/disk"):
            target = disk.find("target")
            if target is not None and target.get("dev") == job.disk:
                return _Seen(info, disks.chain_of(disk), disk.find("mirror") is not None)
        raise BlockJobFailed(f"disk {job.disk} is no longer in domain {job.domain}; "
                             f"{job} cannot finish")

    async def _watch(self, job: BlockJob, *, timeout: float, progress: Progress | None,
                     until_ready: bool, on_back: Callable[[_Seen], Awaitable[None]] | None = None,
                     ) -> tuple[Outcome, _Seen]:
        """Polls until the job is ready (when `until_ready`) or gone. A job gone with its
        work missing is returned, not raised, once that has lasted `settle` seconds."""
        deadline = time.monotonic() + timeout
        away_since: float | None = None
        missing_since: float | None = None
        while True:
            now = time.monotonic()
            try:
                seen = await self._look(job)
            except LibvirtUnavailable:
                away_since = away_since or now
                if now - away_since > self._reconnect:
                    raise
            else:
                if away_since is not None and on_back is not None:
                    await on_back(seen)
                away_since = None
                if seen.info is not None and progress is not None and seen.info.end > 0:
                    progress(100.0 * seen.info.cur / seen.info.end)
                if until_ready and seen.ready():
                    return Outcome.READY, seen
                if seen.gone:
                    if job.leaves not in seen.chain:
                        if progress is not None:
                            progress(100.0)
                        return Outcome.DONE, seen
                    missing_since = missing_since or now
                    if now - missing_since >= self._settle:
                        return Outcome.DONE, seen
                else:
                    missing_since = None
            if now > deadline:
                raise BlockJobTimeout(f"{job} did not end within {timeout:g}s; it is left "
                                      "running")
            await asyncio.sleep(self._poll)

    def _check_done(self, job: BlockJob, seen: _Seen, what: str) -> None:
        if job.leaves in seen.chain:
            raise BlockJobFailed(f"{job} ended without {what} (it failed, or was aborted "
                                 f"outside Strata); {job.leaves} is still in the disk's "
                                 "chain, which reads as before")

    async def wait(self, job: BlockJob, *, timeout: float,
                   progress: Progress | None = None) -> Outcome:
        """READY (a mirroring job in sync) or DONE (the job's work is in)."""
        outcome, seen = await self._watch(job, timeout=timeout, progress=progress,
                                          until_ready=True)
        if outcome is Outcome.DONE:
            self._check_done(job, seen, "finishing")
        return outcome

    async def _request(self, job: BlockJob, flags: int) -> None:
        """blockJobAbort; a job that is gone already is left to the poll to judge."""
        try:
            await self._lv.block_job_abort(job.domain, job.disk,
                                           flags | libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_ASYNC)
        except LibvirtInvalid:
            pass
        except DomainNotFound:
            await self._look(job)  # raises DomainVanished

    async def pivot(self, job: BlockJob, *, timeout: float) -> None:
        """Onto the job's new image; done already when `leaves` is out of the chain. A
        pivot asked for just before a libvirtd restart is asked for again after it."""
        seen = await self._look(job)
        if seen.gone:
            self._check_done(job, seen, "its pivot")
            return
        pivot = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT

        async def again(back: _Seen) -> None:
            if back.ready():
                await self._request(job, pivot)

        await self._request(job, pivot)
        _, seen = await self._watch(job, timeout=timeout, progress=None, until_ready=False,
                                    on_back=again)
        self._check_done(job, seen, "its pivot")

    async def abort(self, job: BlockJob, *, timeout: float) -> bool:
        """Ends the job without pivoting; whether its work landed anyway."""
        seen = await self._look(job)
        if not seen.gone:
            await self._request(job, 0)
            _, seen = await self._watch(job, timeout=timeout, progress=None,
                                        until_ready=False)
        return job.leaves not in seen.chain
