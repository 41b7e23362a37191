"""The agent's side of the authenticated channel: the TLS context it serves, its
enrolment (see `shared.protocol.enrol`), and who may command it.

Before enrolment the agent serves a throw-away self-signed certificate and asks no
client certificate; only /healthz and the enrolment endpoints answer. Once enrolled
(and at every start after), its certificate is the one the controller's CA issued, the
CA is its only trust anchor, and every connection must present a client certificate
the CA signed whose subject is the controller's. Enrolment changes the live
`SSLContext` in place, which applies to every handshake after it. `shared.pki` (and
`cryptography` under it) is imported only for enrolling and for the throw-away
certificate: an enrolled agent starts without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.errors import Conflict, InvalidInput, JoinTokenMismatch, JoinTokenMissing
from shared.protocol.enrol import (
    CA_FILE,
    CONTROLLER_CN,
    CREDENTIAL_FILE,
    NO_PENDING_ENROLMENT,
    CertRequest,
    CertResponse,
    CsrRequest,
    CsrResponse,
    JoinToken,
    cert_mac,
    csr_mac,
    mac_matches,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

log = logging.getLogger(__name__)

AGENT_CN = "strata-agent"
EPHEMERAL_DAYS = 365


def install_credential(tls_dir: str, key_pem: str, cert_pem: str, ca_pem: str) -> None:
    """Keeps an enrolment's outcome, readable by the agent only: the CA first, then the
    key and certificate in one file replaced whole, which is what marks the agent
    enrolled."""
    from shared import pki

    os.makedirs(tls_dir, mode=0o700, exist_ok=True)
    pki.write_private(os.path.join(tls_dir, CA_FILE), ca_pem)
    pki.write_private(os.path.join(tls_dir, CREDENTIAL_FILE), key_pem + cert_pem)


def is_controller(peercert: dict[str, Any] | None) -> bool:
    """Whether a verified peer certificate names the controller (an agent's certificate,
    signed by the same CA, does not)."""
    if not peercert:
        return False
    names = [value for rdn in peercert.get("subject", ()) for key, value in rdn
             if key == "commonName"]
    return names == [CONTROLLER_CN]


@dataclass(frozen=True)
class _Pending:
    token_id: str
    nonce: str
    key: ec.EllipticCurvePrivateKey


class AgentTls:
    def __init__(self, tls_dir: str, join_token_path: str, agent_id: str) -> None:
        self._dir = tls_dir
        self._agent_id = agent_id
        self._join_token_path = join_token_path
        self._pending: _Pending | None = None
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.enrolled = os.path.exists(os.path.join(tls_dir, CREDENTIAL_FILE))
        if self.enrolled:
            self._load_credential()
        else:
            self._load_ephemeral()

    def _load_credential(self) -> None:
        self.context.load_cert_chain(os.path.join(self._dir, CREDENTIAL_FILE))
        self.context.load_verify_locations(cafile=os.path.join(self._dir, CA_FILE))
        self.context.verify_mode = ssl.CERT_REQUIRED

    def _load_ephemeral(self) -> None:
        from shared import pki

        pair = pki.self_signed(f"{AGENT_CN}-unenrolled", EPHEMERAL_DAYS)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "ephemeral.pem")
            pki.write_private(path, pair.key_pem + pair.cert_pem)
            self.context.load_cert_chain(path)
        self.context.verify_mode = ssl.CERT_NONE

    def _join_token(self) -> JoinToken:
        """Read when asked, so the operator may put it in place while the agent runs."""
        try:
            with open(self._join_token_path) as f:
                text = f.read()
        except FileNotFoundError:
            raise JoinTokenMissing(
                f"no join token in {self._join_token_path} yet; put the one the controller "
                "made for this host there") from None
        try:
            return JoinToken.parse(text)
        except InvalidInput:
            raise JoinTokenMismatch(
                f"{self._join_token_path} does not hold a Strata join token") from None

    def _token_for(self, token_id: str) -> JoinToken:
        token = self._join_token()
        if not mac_matches(token.token_id, token_id):
            raise JoinTokenMismatch(
                f"the join token in {self._join_token_path} is not the one the controller "
                "holds for this host (used, replaced or for another host); put the newest "
                "one there")
        return token

    def begin(self, req: CsrRequest) -> CsrResponse:
        """A fresh key, kept pending, and its signing request, MAC'd with the join secret."""
        from shared import pki

        token = self._token_for(req.token_id)
        key = pki.new_key()
        csr = pki.make_csr(key, AGENT_CN)
        self._pending = _Pending(token.token_id, req.nonce, key)
        return CsrResponse(agent_id=self._agent_id, csr_pem=csr,
                           mac=csr_mac(token.secret, token.token_id, req.nonce,
                                       self._agent_id, csr))

    def complete(self, req: CertRequest) -> CertResponse:
        """Installs the certificate for the pending key once the controller proved it made
        the join token; from then on only the controller's certificate is let in."""
        from shared import pki

        pending = self._pending
        if pending is None or not mac_matches(pending.nonce, req.nonce):
            raise Conflict("no enrolment of this nonce is in progress",
                           code=NO_PENDING_ENROLMENT)
        token = self._token_for(pending.token_id)
        if not mac_matches(req.mac, cert_mac(token.secret, req.nonce, req.cert_pem,
                                             req.ca_pem)):
            raise JoinTokenMismatch("the certificate is not proven by this host's join token")
        cert, ca = pki.load_cert(req.cert_pem), pki.load_cert(req.ca_pem)
        if not pki.same_public_key(cert, pending.key):
            raise InvalidInput("the certificate is not for the key this enrolment made")
        pki.check_issued_by(cert, ca)
        install_credential(self._dir, pki.key_pem(pending.key), req.cert_pem, req.ca_pem)
        self._load_credential()
        self._pending = None
        self.enrolled = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._join_token_path)
        fingerprint = pki.fingerprint(cert)
        log.info("enrolled: serving certificate %s; only the controller is let in now",
                 fingerprint)
        return CertResponse(fingerprint=fingerprint)
