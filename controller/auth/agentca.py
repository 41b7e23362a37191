"""The controller's CA for the agent channel, and what it issues: the controller's own
client certificate, and each agent's server certificate, named after its host and its
enrolment so that a certificate from an earlier (revoked) enrolment names nothing the
controller will accept.

The CA lives in the database with its key sealed, made by the first controller to
start; every controller on that database issues itself a client certificate from it at
start, so agents trust them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.agentchannel import agent_server_name
from controller.db.models import CertificateAuthority
from controller.secrets import SecretBox
from shared import pki
from shared.protocol.enrol import CONTROLLER_CN

CA_ID = "agent-channel"
CA_NAME = "Strata agent channel CA"
CA_DAYS = 3650
CERT_DAYS = 365
AGENT_CN = "strata-agent"  # the name that counts is the DNS one
CLIENT_CERT_FILE = "controller.pem"  # the controller's key, then its certificate


@dataclass(frozen=True)
class AgentCertificate:
    cert_pem: str
    fingerprint: str
    serial: str
    expires_at: float


class AgentCa:
    def __init__(self, pair: pki.KeyPair) -> None:
        self._pair = pair

    @property
    def cert_pem(self) -> str:
        return self._pair.cert_pem

    @staticmethod
    async def exists(db: async_sessionmaker[AsyncSession]) -> bool:
        """Whether the database has its CA, and so credentials sealed under some key."""
        async with db() as session:
            return await session.get(CertificateAuthority, CA_ID) is not None

    @classmethod
    async def load_or_create(cls, db: async_sessionmaker[AsyncSession],
                             secrets: SecretBox) -> AgentCa:
        """The database's CA; made on first start (a controller starting at the same
        time that loses the race takes the winner's)."""
        async with db() as session:
            row = await session.get(CertificateAuthority, CA_ID)
        if row is None:
            pair = pki.make_ca(CA_NAME, CA_DAYS)
            try:
                async with db.begin() as session:
                    session.add(CertificateAuthority(id=CA_ID, cert_pem=pair.cert_pem,
                                                     key_sealed=secrets.seal(pair.key_pem)))
                return cls(pair)
            except IntegrityError:
                async with db() as session:
                    row = (await session.scalars(select(CertificateAuthority).where(
                        CertificateAuthority.id == CA_ID))).one()
        return cls(pki.KeyPair(row.cert_pem, secrets.open(row.key_sealed)))

    def issue_controller_credential(self, tls_dir: str) -> str:
        """A fresh client certificate (EKU clientAuth only) and key for this controller,
        written for `SSLContext.load_cert_chain`; returns the file's path."""
        key = pki.new_key()
        cert = pki.issue(self._pair, key.public_key(), CONTROLLER_CN, days=CERT_DAYS,
                         client=True)
        os.makedirs(tls_dir, mode=0o700, exist_ok=True)
        path = os.path.join(tls_dir, CLIENT_CERT_FILE)
        pki.write_private(path, pki.key_pem(key) + pki.cert_pem(cert))
        return path

    def issue_agent(self, csr_pem: str, host_id: str, enrolment_id: str) -> AgentCertificate:
        """A server certificate (EKU serverAuth only) for the signing request's key."""
        name = agent_server_name(host_id, enrolment_id)
        cert = pki.issue(self._pair, pki.csr_public_key(csr_pem), AGENT_CN, days=CERT_DAYS,
                         client=False, dns_name=name)
        return AgentCertificate(pki.cert_pem(cert), pki.fingerprint(cert),
                                format(cert.serial_number, "x"),
                                cert.not_valid_after_utc.timestamp())
