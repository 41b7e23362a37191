"""The controller's side of the agent protocol: submit a command, wait for its task.

A submit carries a task id the caller derives from its job, so a resumed job (after a
controller restart) re-submits the same id and simply goes on waiting for the same task.
Every call runs over the mutual-TLS channel (`controller.agentchannel`): an agent that
fails the handshake is `agent_untrusted` at once, never retried as unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from pydantic import ValidationError

from controller.agentchannel import AgentChannel, AgentTarget
from shared.errors import (
    AgentShuttingDown,
    AgentUnreachable,
    AgentUntrusted,
    NotFound,
    OperationFailed,
    Unauthorized,
    from_body,
)
from shared.logs import HEADER, REQUEST_ID
from shared.protocol.command import Command
from shared.protocol.enrol import CertRequest, CertResponse, CsrRequest, CsrResponse
from shared.protocol.envelope import CommandEnvelope, TaskInfo, TaskState
from shared.protocol.host import NetworkFacts, ProbeRequest, ProbeResults
from shared.protocol.types import Model

log = logging.getLogger(__name__)

P = TypeVar("P", bound=Model)
R = TypeVar("R", bound=Model)
T = TypeVar("T")
ProgressCallback = Callable[[float], None]
NoticeCallback = Callable[[str | None], None]

# Each long-poll returns at least this often, so the job shows the task's progress.
POLL_WAIT = 2
RETRY_DELAYS = (0.2, 0.5, 1, 2, 5)
PROBE_TIMEOUT = 5


@dataclass(frozen=True)
class Health:
    """`problem`: what went wrong, None when the agent answered. `instance`: which start
    of the agent answered; a new one means it restarted, cutting its tasks short."""

    problem: str | None
    instance: str | None = None


class AgentClient:
    """`unreachable_timeout`: how long a call keeps retrying an agent that does not answer
    before it fails with `agent_unreachable`, however long the command itself may run."""

    def __init__(self, http: aiohttp.ClientSession, channel: AgentChannel,
                 unreachable_timeout: float = 120) -> None:
        self._http = http
        self._channel = channel
        self.unreachable_timeout = unreachable_timeout

    async def call(
        self, target: AgentTarget, command: Command[P, R], task_id: str, payload: P, *,
        timeout: float | None = None, progress: ProgressCallback | None = None,
        notice: NoticeCallback | None = None,
    ) -> R:
        """Runs `command` on the target's agent and returns its typed result, waiting
        at most `timeout` (the command's own by default). Raises the task's error, rebuilt
        from its `{code, message}`. While the agent can't be reached, `notice` gets a line
        saying so (and None once it answers again)."""
        deadline = time.time() + (command.timeout if timeout is None else timeout)
        envelope = CommandEnvelope(task_id=task_id, deadline=deadline,
                                   payload=payload.model_dump(mode="json"))
        info = await self._retrying(
            deadline, target.address, notice,
            lambda: self._task("POST", target, f"/v1/commands/{command.name}",
                               envelope.model_dump(mode="json")))
        while not info.state.finished:
            if progress:
                progress(info.progress)
            info = await self._retrying(
                deadline, target.address, notice,
                lambda: self._poll_or_resubmit(target, command.name, task_id, envelope))
        if info.state is TaskState.SUCCEEDED:
            return command.result.model_validate(info.result or {})
        assert info.error is not None
        raise from_body(info.error.code, info.error.message)

    async def cancel(self, target: AgentTarget, task_id: str, wait: float = 60) -> None:
        """Cancels the task and waits (up to `wait` seconds) until it has ended, so what
        it leaves behind is settled; a task the agent does not know is nothing to do."""
        deadline = time.monotonic() + wait
        try:
            info = await self._task("DELETE", target, f"/v1/tasks/{task_id}")
            while not info.state.finished and time.monotonic() < deadline:
                info = await self._task("GET", target, f"/v1/tasks/{task_id}?wait={POLL_WAIT}")
        except (NotFound, _TaskUnknown):
            return
        if not info.state.finished:
            log.warning("agent task %s still runs %ss after its cancel", task_id, wait)

    async def enrol_csr(self, target: AgentTarget, req: CsrRequest) -> CsrResponse:
        """Enrolment's first step (see `shared.protocol.enrol`): no server is verified."""
        return await self._request("POST", target, "/v1/enrol/csr", req.model_dump(),
                                   CsrResponse.model_validate, enrolment=True)

    async def enrol_cert(self, target: AgentTarget, req: CertRequest) -> CertResponse:
        return await self._request("POST", target, "/v1/enrol/cert", req.model_dump(),
                                   CertResponse.model_validate, enrolment=True)

    async def health(self, target: AgentTarget, *, enrolment: bool = False) -> Health:
        """The enrolled agent's answer to its health check, or what went wrong. With
        `enrolment`, any agent at the address will do (one not enrolled yet, whose join
        token the next connect spends): `/healthz` is all that is asked of it."""
        try:
            data = await self._request("GET", target, "/healthz", None, lambda data: data,
                                       enrolment=enrolment, timeout=PROBE_TIMEOUT)
        except TimeoutError:
            return Health(f"no answer within {PROBE_TIMEOUT}s")
        except AgentUntrusted as exc:
            return Health(exc.message)
        except (aiohttp.ClientError, OperationFailed) as exc:
            return Health(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
        instance = data.get("instance") if isinstance(data, dict) else None
        return Health(None, instance if isinstance(instance, str) else None)

    async def network(self, target: AgentTarget, servers: list[str]) -> NetworkFacts:
        """The agent's interfaces and its routes to `servers` (and to those it uses)."""
        query = urllib.parse.urlencode([("server", server) for server in servers])
        try:
            return await self._request("GET", target, f"/debug/network?{query}", None,
                                       NetworkFacts.model_validate, timeout=PROBE_TIMEOUT * 3)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise AgentUnreachable(f"agent at {target.address} unreachable: {exc}") from exc

    async def probe(self, target: AgentTarget, req: ProbeRequest) -> ProbeResults:
        """The agent's heartbeat in each storage root; it answers within the probe's own
        timeout, so waiting a little longer is enough."""
        try:
            return await self._request("POST", target, "/v1/probe", req.model_dump(),
                                       ProbeResults.model_validate,
                                       timeout=req.timeout + PROBE_TIMEOUT)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise AgentUnreachable(f"agent at {target.address} unreachable: {exc}") from exc

    async def _poll_or_resubmit(
        self, target: AgentTarget, command: str, task_id: str, envelope: CommandEnvelope
    ) -> TaskInfo:
        try:
            return await self._task("GET", target, f"/v1/tasks/{task_id}?wait={POLL_WAIT}")
        except _TaskUnknown:
            # The agent lost its task log (a reinstalled host): the id still protects us.
            return await self._task("POST", target, f"/v1/commands/{command}",
                                    envelope.model_dump(mode="json"))

    async def _task(self, method: str, target: AgentTarget, path: str,
                    body: object = None) -> TaskInfo:
        return await self._request(method, target, path, body, TaskInfo.model_validate)

    async def _request(self, method: str, target: AgentTarget, path: str, body: object,
                       parse: Callable[[object], T], *, enrolment: bool = False,
                       timeout: float = 60) -> T:
        """One request to the target's agent. Over the verified channel, a listener that
        fails the handshake raises `AgentUntrusted` before any HTTP byte leaves."""
        url = f"{target.address}{path}"
        context = self._channel.enrolment if enrolment else self._channel.verified
        server_name = None if enrolment else target.server_name
        rid = REQUEST_ID.get()
        try:
            async with self._http.request(
                method, url, json=body, ssl=context, server_hostname=server_name,
                headers={HEADER: rid} if rid else None,
                timeout=aiohttp.ClientTimeout(total=timeout, connect=min(10, timeout)),
            ) as resp:
                try:
                    data = await resp.json(content_type=None)
                    if resp.status in (200, 202):
                        return parse(data)
                except (ValueError, ValidationError):
                    raise OperationFailed(
                        f"{target.address} did not answer as a Strata agent "
                        f"(HTTP {resp.status})", code="not_an_agent") from None
        except aiohttp.ClientSSLError as exc:
            raise AgentUntrusted(
                f"the listener at {target.address} did not prove it is the enrolled agent "
                f"of host {target.host_name} ({exc}); nothing was sent to it. If the host's "
                "agent was reinstalled, enrol it again with a new join token") from exc
        if not isinstance(data, dict):
            data = {"message": str(data)}
        if resp.status == 404 and method == "GET" and path.startswith("/v1/tasks/"):
            raise _TaskUnknown()
        if resp.status == 401:
            raise Unauthorized(f"agent at {target.address} refused the controller: "
                               f"{data.get('message', '')}", code="agent_refused")
        raise from_body(data.get("code", "agent_error"), data.get("message", str(data)))

    async def _retrying(
        self, deadline: float, address: str, notice: NoticeCallback | None,
        request: Callable[[], Awaitable[TaskInfo]],
    ) -> TaskInfo:
        """Retries only what a network or a restarting agent causes (an agent shutting
        down, which refuses new tasks, included), until the command's deadline or for
        `unreachable_timeout`, whichever comes first; errors the agent states (4xx
        bodies) go straight to the caller."""
        attempt = 0
        give_up = deadline
        while True:
            try:
                info = await request()
            except (aiohttp.ClientConnectionError, TimeoutError, AgentShuttingDown) as exc:
                if attempt == 0:
                    give_up = min(deadline, time.time() + self.unreachable_timeout)
                if time.time() >= give_up:
                    raise AgentUnreachable(f"agent at {address} unreachable: {exc}") from exc
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                log.info("agent %s unreachable (%s); retrying in %ss", address, exc, delay)
                if notice:
                    notice(f"agent at {address} unreachable ({exc}); retrying")
                await asyncio.sleep(delay)
                continue
            if attempt and notice:
                notice(None)
            return info


class _TaskUnknown(Exception):
    pass
