"""Enrolling a host's agent: its one-time join tokens, and the exchange the connect job
runs to give the agent its certificate (see `shared.protocol.enrol`). The controller
keeps only a join token's sealed secret and expiry; the token itself is shown once."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.agentchannel import AgentTarget
from controller.auth.agentca import AgentCa
from controller.db.lookup import get_or_404
from controller.db.models import Host, HostState
from controller.db.transitions import transition
from controller.jobs.engine import JobContext
from controller.secrets import SecretBox
from shared.errors import (
    AgentUnreachable,
    AgentUntrusted,
    Conflict,
    InvalidInput,
    JoinTokenMissing,
    OperationFailed,
    StrataError,
)
from shared.protocol.enrol import (
    NO_PENDING_ENROLMENT,
    CertRequest,
    CsrRequest,
    CsrResponse,
    JoinToken,
    cert_mac,
    csr_mac,
    mac_matches,
)

RETRY_DELAYS = (0.2, 0.5, 1, 2)
# What a host row holds of its enrolment: cleared together on revocation.
NO_ENROLMENT: dict[str, Any] = {"enrolment_id": None, "cert_fingerprint": None,
                                "cert_serial": None, "cert_expires_at": None}
NO_JOIN_TOKEN: dict[str, Any] = {"join_token_id": None, "join_secret_sealed": None,
                                 "join_token_expires_at": None}


class Enrolment:
    """`join_token_ttl`: seconds a join token stays usable."""

    def __init__(self, ca: AgentCa, secret_box: SecretBox, join_token_ttl: float) -> None:
        self._ca = ca
        self._secrets = secret_box
        self._ttl = join_token_ttl

    def new_join_token(self) -> tuple[JoinToken, dict[str, Any]]:
        """A fresh token, and the host columns that keep it (sealed) until it is used."""
        token = JoinToken(secrets.token_hex(16), secrets.token_urlsafe(32))
        return token, {"join_token_id": token.token_id,
                       "join_secret_sealed": self._secrets.seal(token.secret),
                       "join_token_expires_at": time.time() + self._ttl}

    async def replace_join_token(self, session: AsyncSession,
                                 host_id: str) -> tuple[Host, JoinToken]:
        """A new token for the host, which invalidates the one it had."""
        host = await get_or_404(session, Host, host_id, "host")
        token, values = self.new_join_token()
        for key, value in values.items():
            setattr(host, key, value)
        return host, token

    async def enrol(self, ctx: JobContext, host: Host) -> Host:
        """Gives the host's agent a certificate, using (and so spending) its join token,
        and returns the host as enrolled. Waits, at most the agent-unreachable timeout,
        for the agent to answer and to have its join token in place."""
        if host.join_token_id is None or host.join_secret_sealed is None:
            raise Conflict(f"host {host.name} has no join token", code="join_token_missing")
        self._check_expiry(host)
        secret = self._secrets.open(host.join_secret_sealed)
        target = AgentTarget.of(host)
        nonce = secrets.token_hex(32)
        answer = await self._csr(ctx, target, CsrRequest(token_id=host.join_token_id,
                                                         nonce=nonce))
        if not mac_matches(answer.mac, csr_mac(secret, host.join_token_id, nonce,
                                               answer.agent_id, answer.csr_pem)):
            raise AgentUntrusted(f"the listener at {host.address} did not prove it holds "
                                 f"host {host.name}'s join token")
        async with ctx.db() as session:
            twin = await session.scalar(select(Host.name).where(
                Host.agent_id == answer.agent_id, Host.id != host.id))
        if twin is not None:
            raise Conflict(f"the agent at {host.address} is already registered as host "
                           f"{twin}", code="agent_taken")
        self._check_expiry(host)
        enrolment_id = secrets.token_hex(8)
        try:
            cert = self._ca.issue_agent(answer.csr_pem, host.id, enrolment_id)
        except InvalidInput as exc:
            raise OperationFailed(f"the agent of host {host.name} sent a signing request "
                                  f"that was refused: {exc.message}",
                                  code="enrolment_failed") from None
        async with ctx.db.begin() as session:
            spent = await transition(
                session, Host, host.id, list(HostState), HostState.CONNECTING,
                where={"join_token_id": host.join_token_id}, **NO_JOIN_TOKEN,
                enrolment_id=enrolment_id, cert_fingerprint=cert.fingerprint,
                cert_serial=cert.serial, cert_expires_at=cert.expires_at,
                agent_id=answer.agent_id)
        if not spent:
            raise Conflict(f"the join token of host {host.name} was used or replaced "
                           "meanwhile", code="join_token_used")
        ca_pem = self._ca.cert_pem
        await self._deliver(ctx, target, CertRequest(
            nonce=nonce, cert_pem=cert.cert_pem, ca_pem=ca_pem,
            mac=cert_mac(secret, nonce, cert.cert_pem, ca_pem)))
        async with ctx.db() as session:
            return await get_or_404(session, Host, host.id, "host")

    @staticmethod
    def _check_expiry(host: Host) -> None:
        if (host.join_token_expires_at or 0) < time.time():
            raise Conflict(f"the join token of host {host.name} has expired; make a new one "
                           f"(POST /v1/hosts/{host.id}/join-token)", code="join_token_expired")

    async def _csr(self, ctx: JobContext, target: AgentTarget,
                   req: CsrRequest) -> CsrResponse:
        give_up = time.monotonic() + ctx.agents.unreachable_timeout
        attempt = 0
        failure: StrataError
        while True:
            try:
                answer = await ctx.agents.enrol_csr(target, req)
            except JoinTokenMissing as exc:
                waiting = f"waiting for the join token on host {target.host_name}: {exc.message}"
                failure = exc
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                waiting = (f"agent at {target.address} unreachable ({exc}); waiting for it to "
                           "enrol")
                failure = AgentUnreachable(f"agent at {target.address} unreachable: {exc}")
            else:
                ctx.notice(None)
                return answer
            if time.monotonic() >= give_up:
                raise type(failure)(f"{failure.message} (waited "
                                    f"{ctx.agents.unreachable_timeout:g}s)", code=failure.code)
            ctx.notice(waiting)
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1

    async def _deliver(self, ctx: JobContext, target: AgentTarget, req: CertRequest) -> None:
        """The certificate, to the agent holding the pending key; the join token is spent
        by now, so a failure here needs a new one. An agent that no longer has the
        enrolment pending after a lost answer may have taken it: the verified call the
        connect job makes next tells."""
        give_up = time.monotonic() + ctx.agents.unreachable_timeout
        attempt = 0
        while True:
            try:
                await ctx.agents.enrol_cert(target, req)
                return
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if time.monotonic() >= give_up:
                    raise AgentUnreachable(
                        f"agent at {target.address} unreachable while taking its "
                        f"certificate ({exc}); make a new join token to enrol it") from exc
            except StrataError as exc:
                if attempt and exc.code == NO_PENDING_ENROLMENT:
                    return
                raise OperationFailed(f"the agent of host {target.host_name} refused its "
                                      f"certificate: {exc.message}; make a new join token "
                                      "to enrol it", code="enrolment_failed") from None
            await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            attempt += 1
