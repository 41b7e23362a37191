"""Enrolment: how an agent gets its certificate, started by the controller, with no
secret on the wire.

The controller makes a one-time join token per host, `sj1.<token id>.<secret>`, which
the operator puts in the agent's join-token file. Then:

1. `POST /v1/enrol/csr` `{token_id, nonce}`: the agent makes a fresh key and answers its
   signing request and its agent id with `mac = HMAC-SHA256(secret,
   "csr"|token_id|nonce|agent_id|csr)`, proving it holds the join token (the controller
   refuses an agent that is already another host's before it signs anything).
2. `POST /v1/enrol/cert` `{cert_pem, ca_pem, mac}` with `mac = HMAC-SHA256(secret,
   "cert"|nonce|cert|ca)`, proving the certificate comes from the controller that made
   the token; the agent then pins the CA and requires the controller's client
   certificate (subject CN `CONTROLLER_CN`) on every later connection.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from pydantic import Field

from shared.errors import InvalidInput
from shared.protocol.types import Model

CONTROLLER_CN = "strata-controller"
# In the agent's state directory: the join token (unless its configuration names
# another file), and once enrolled, in TLS_DIR, its key and certificate and the CA.
JOIN_TOKEN_FILE = "join-token"  # noqa: S105 - a file name, not a secret
TLS_DIR = "tls"
CREDENTIAL_FILE = "credential.pem"  # the agent's key, then its certificate
CA_FILE = "ca.pem"
JOIN_TOKEN_PREFIX = "sj1"  # noqa: S105 - a format marker, not a secret
TOKEN_ID_RE = r"^[0-9a-f]{32}$"  # noqa: S105 - a pattern
NONCE_RE = r"^[0-9a-f]{64}$"
_JOIN_TOKEN_RE = re.compile(
    rf"^{JOIN_TOKEN_PREFIX}\.([0-9a-f]{{32}})\.([A-Za-z0-9_-]{{43}})$")
MAX_PEM = 16 << 10
# The agent's answer to a certificate for no enrolment it has under way.
NO_PENDING_ENROLMENT = "no_pending_enrolment"


@dataclass(frozen=True)
class JoinToken:
    token_id: str
    secret: str

    def __str__(self) -> str:
        return f"{JOIN_TOKEN_PREFIX}.{self.token_id}.{self.secret}"

    @classmethod
    def parse(cls, text: str) -> JoinToken:
        match = _JOIN_TOKEN_RE.match(text.strip())
        if match is None:
            raise InvalidInput("not a Strata join token (sj1.<id>.<secret>)")
        return cls(match[1], match[2])


def _mac(secret: str, *parts: str) -> str:
    """HMAC-SHA256 over the parts, each length-prefixed so no two sequences collide."""
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode()
        mac.update(len(data).to_bytes(4, "big") + data)
    return mac.hexdigest()


def csr_mac(secret: str, token_id: str, nonce: str, agent_id: str, csr_pem: str) -> str:
    return _mac(secret, "csr", token_id, nonce, agent_id, csr_pem)


def cert_mac(secret: str, nonce: str, cert_pem: str, ca_pem: str) -> str:
    return _mac(secret, "cert", nonce, cert_pem, ca_pem)


def mac_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class CsrRequest(Model):
    token_id: str = Field(pattern=TOKEN_ID_RE)
    nonce: str = Field(pattern=NONCE_RE)


class CsrResponse(Model):
    agent_id: str = Field(max_length=64)
    csr_pem: str = Field(max_length=MAX_PEM)
    mac: str


class CertRequest(Model):
    nonce: str = Field(pattern=NONCE_RE)
    cert_pem: str = Field(max_length=MAX_PEM)
    ca_pem: str = Field(max_length=MAX_PEM)
    mac: str


class CertResponse(Model):
    fingerprint: str = Field(description="sha256 of the certificate the agent now serves.")
