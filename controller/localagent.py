"""Embedded defaults: a strata-agent child process beside the controller, and a first run
seeded with a `local` primary storage and a `dir` image store under the state directory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator

from sqlalchemy import select

from controller.config import ControllerConfig
from controller.db.models import Host, JobState
from controller.services.commands import AddHost, CreateBackupStorage, CreatePrimaryStorage
from controller.services.container import Services

log = logging.getLogger(__name__)

SEED_HOST = "local"
SEED_PRIMARY = "local"
SEED_BACKUP = "images"


@contextlib.asynccontextmanager
async def embedded(config: ControllerConfig, services: Services) -> AsyncIterator[None]:
    """The local agent for the controller's lifetime, seeded in the background."""
    async with _agent_process(config):
        seeding = asyncio.create_task(seed(config, services))
        try:
            yield
        finally:
            seeding.cancel()
            await asyncio.gather(seeding, return_exceptions=True)


@contextlib.asynccontextmanager
async def _agent_process(config: ControllerConfig) -> AsyncIterator[None]:
    state = os.path.join(config.state_dir, "agent")
    os.makedirs(state, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--listen", config.local_agent_listen,
        "--debug-listen", config.local_agent_debug_listen, "--state-dir", state,
        "--token-file", config.token_path,
    )
    log.info("started local agent (pid %d) on %s", proc.pid, config.local_agent_listen)
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def seed(config: ControllerConfig, services: Services) -> None:
    """First start only: register the local host, its storage and an image store."""
    async with services.db() as session:
        if await session.scalar(select(Host.id).limit(1)) is not None:
            return
    _, job = await services.hosts.add(AddHost(
        name=SEED_HOST, address=f"http://{config.local_agent_listen}"))
    host_id = job.resource_id
    assert host_id is not None
    await _settle(services, job.id)
    _, attach = await services.primary_storages.create(CreatePrimaryStorage(
        name=SEED_PRIMARY, type="local", overprovision_factor=4.0,
        config={"path": os.path.join(config.state_dir, "primary")}, hosts=(host_id,)))
    if attach is not None:
        await _settle(services, attach.id)
    _, connect = await services.backup_storages.create(CreateBackupStorage(
        name=SEED_BACKUP, type="dir", config={"path": os.path.join(config.state_dir, "images")}))
    await _settle(services, connect.id)
    log.info("seeded host %r, primary storage %r and image store %r",
             SEED_HOST, SEED_PRIMARY, SEED_BACKUP)


async def _settle(services: Services, job_id: str) -> None:
    job = await services.jobs.get(job_id, wait=60)
    if job.state != JobState.SUCCEEDED:
        log.error("seeding step %s did not succeed: %s", job.kind, job.error_message)
