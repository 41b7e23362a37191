"""Embedded defaults: a strata-agent child process beside the controller, and a first run
seeded with a `local` host (its join token written where the local agent looks for it,
so it enrols with no manual step), a `local` primary storage and a `dir` image store
under the state directory."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator

from sqlalchemy import select

from controller.agentchannel import AgentTarget
from controller.agentclient import AgentClient
from controller.config import ControllerConfig
from controller.db.models import Host, JobState
from controller.services.commands import AddHost, CreateBackupStorage, CreatePrimaryStorage
from controller.services.container import Services
from controller.services.hosts import revoked
from shared import pki
from shared.protocol.enrol import CREDENTIAL_FILE, JOIN_TOKEN_FILE, TLS_DIR, JoinToken
from shared.sdnotify import NOTIFY_VARS

log = logging.getLogger(__name__)

SEED_HOST = "local"
SEED_PRIMARY = "local"
SEED_BACKUP = "images"
# How long seeding waits for the local agent to listen (a slow host, restarts with
# back-off) before it registers the host all the same; the host monitor connects it
# once its agent answers.
AGENT_START_WAIT = 300.0
# The local agent's shutdown grace: it stops with the controller, which waits STOP_WAIT
# for it, so its unfinished tasks are recorded interrupted before any kill.
LOCAL_AGENT_GRACE = 5.0
STOP_WAIT = 10.0


@contextlib.asynccontextmanager
async def embedded(config: ControllerConfig, services: Services,
                   agents: AgentClient) -> AsyncIterator[None]:
    """The local agent for the controller's lifetime, seeded in the background."""
    async with _agent_process(config):
        seeding = asyncio.create_task(seed(config, services, agents))
        try:
            yield
        finally:
            seeding.cancel()
            await asyncio.gather(seeding, return_exceptions=True)


@contextlib.asynccontextmanager
async def _agent_process(config: ControllerConfig) -> AsyncIterator[None]:
    """The local agent, started again with back-off whenever it exits, until the
    controller stops."""
    supervisor = LocalAgent(config)
    task = asyncio.create_task(supervisor.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class LocalAgent:
    """A child agent kept alive: restarts wait 1, 2, 4 ... 30 s, and the wait starts over
    once an agent has stayed up for a minute."""

    MAX_BACKOFF = 30.0
    STABLE = 60.0

    def __init__(self, config: ControllerConfig) -> None:
        self._config = config
        self._state = config.local_agent_state_dir

    def _argv(self) -> list[str]:
        c = self._config
        settings: dict[str, object] = {"shutdown_grace": LOCAL_AGENT_GRACE}
        if c.local_agent_download_allow:
            settings["download_allow"] = c.local_agent_download_allow
        toml = os.path.join(self._state, "agent.toml")
        with open(toml, "w") as f:
            f.write("".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items()))
        return [sys.executable, "-m", "agent", "--listen", c.local_agent_listen,
                "--debug-listen", c.local_agent_debug_listen, "--state-dir", self._state,
                "--config", toml]

    async def run(self) -> None:
        os.makedirs(self._state, exist_ok=True)
        backoff = 1.0
        while True:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*self._argv(), env=child_env())
            log.info("started local agent (pid %d) on %s", proc.pid,
                     self._config.local_agent_listen)
            try:
                code = await proc.wait()
            except asyncio.CancelledError:
                await _stop(proc)
                raise
            if time.monotonic() - started > self.STABLE:
                backoff = 1.0
            log.warning("local agent exited with %s; starting it again in %gs", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.MAX_BACKOFF)


def child_env() -> dict[str, str]:
    """The controller's environment minus systemd's notification variables: readiness
    and the watchdog are the controller's to report, not its child's."""
    return {k: v for k, v in os.environ.items() if k not in NOTIFY_VARS}


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_WAIT)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def seed(config: ControllerConfig, services: Services, agents: AgentClient,
               agent_wait: float = AGENT_START_WAIT) -> None:
    """First start: register the local host, its storage and an image store. Later
    starts: enrol the local agent again if it has no credential (a set-up from before
    enrolment, or its state was removed), unless the operator revoked it. Either only
    once the agent listens: a host added before would fail its connect, and the
    storages with it."""
    address = f"https://{config.local_agent_listen}"
    await wait_for_agent(agents, address, agent_wait)
    async with services.db() as session:
        seeded = await session.scalar(select(Host.id).limit(1)) is not None
        local = await session.scalar(select(Host).where(Host.name == SEED_HOST,
                                                        Host.address == address))
    if seeded:
        if local is not None:
            await _readmit(config, services, local)
        return
    _, job, token = await services.hosts.add(AddHost(name=SEED_HOST, address=address))
    _give_join_token(config, token)
    host_id = job.resource_id
    assert host_id is not None
    await _settle(services, job.id)
    _, attach = await services.primary_storages.create(CreatePrimaryStorage(
        name=SEED_PRIMARY, type="local", overprovision_factor=4.0,
        config={"path": os.path.join(config.state_dir, "primary")}, hosts=(host_id,)))
    await _settle(services, attach.id)
    _, connect = await services.backup_storages.create(CreateBackupStorage(
        name=SEED_BACKUP, type="dir", config={"path": os.path.join(config.state_dir, "images")}))
    await _settle(services, connect.id)
    log.info("seeded host %r, primary storage %r and image store %r",
             SEED_HOST, SEED_PRIMARY, SEED_BACKUP)


async def wait_for_agent(agents: AgentClient, address: str, timeout: float) -> bool:
    """Whether the agent at `address` answered `/healthz` within `timeout` seconds."""
    target = AgentTarget(host_id="", host_name=SEED_HOST, address=address,
                         enrolment_id=None)
    deadline = time.monotonic() + timeout
    while (problem := (await agents.health(target, enrolment=True)).problem) is not None:
        if time.monotonic() >= deadline:
            log.warning("the local agent at %s did not answer within %gs (%s); seeding "
                        "all the same", address, timeout, problem)
            return False
        await asyncio.sleep(0.5)
    return True


def _give_join_token(config: ControllerConfig, token: JoinToken) -> None:
    """Where the local agent looks for its join token, as an operator would put it."""
    os.makedirs(config.local_agent_state_dir, exist_ok=True)
    pki.write_private(os.path.join(config.local_agent_state_dir, JOIN_TOKEN_FILE),
                      f"{token}\n")


def _enrolled(config: ControllerConfig) -> bool:
    return os.path.exists(os.path.join(config.local_agent_state_dir, TLS_DIR, CREDENTIAL_FILE))


async def _readmit(config: ControllerConfig, services: Services, host: Host) -> None:
    if _enrolled(config) or revoked(host):
        return
    _, token = await services.hosts.join_token(host.id)
    _give_join_token(config, token)
    log.info("the local agent has no credential; enrolling it again")
    await _settle(services, (await services.hosts.reconnect(host.id)).id)


async def _settle(services: Services, job_id: str) -> None:
    job = await services.jobs.get(job_id, wait=60)
    if job.state != JobState.SUCCEEDED:
        log.error("seeding step %s did not succeed: %s", job.kind, job.error_message)
