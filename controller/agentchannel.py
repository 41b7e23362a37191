"""The controller's end of the agent channel: mutual TLS under the controller's CA.

Every call to an agent goes to its host's address with the name its enrolment put in
its certificate, verified against the CA alone, with the controller's client
certificate: a listener that cannot prove it is the host's enrolled agent fails the
handshake, before any request byte is sent. Enrolment itself uses a context that
verifies no server (nothing secret travels, every step is MAC'd with the join
secret) but still presents the client certificate, so an agent that is already
enrolled accepts the handshake and can be enrolled again.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from controller.db.models import Host
from shared.errors import AgentUntrusted

AGENT_DOMAIN = "agent.strata.invalid"


def agent_server_name(host_id: str, enrolment_id: str) -> str:
    """The DNS name an agent's certificate carries: one per host and enrolment, so a
    certificate of an earlier (revoked) enrolment names nothing the controller accepts."""
    return f"e{enrolment_id}.h{host_id.replace('-', '')}.{AGENT_DOMAIN}"


@dataclass(frozen=True)
class AgentTarget:
    """Where a host's agent answers, and who it must prove to be."""

    host_id: str
    host_name: str
    address: str
    enrolment_id: str | None

    @classmethod
    def of(cls, host: Host) -> AgentTarget:
        return cls(host.id, host.name, host.address, host.enrolment_id)

    @property
    def server_name(self) -> str:
        if self.enrolment_id is None:
            raise AgentUntrusted(
                f"host {self.host_name} has no enrolled agent (its credential was revoked, "
                "or it was never enrolled); make a join token for it "
                f"(POST /v1/hosts/{self.host_id}/join-token), put it on the host and "
                "reconnect it", code="agent_untrusted")
        return agent_server_name(self.host_id, self.enrolment_id)


class AgentChannel:
    """`credential`: the file holding the controller's client key and certificate."""

    def __init__(self, ca_pem: str, credential: str) -> None:
        self.verified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.verified.minimum_version = ssl.TLSVersion.TLSv1_2
        self.verified.load_verify_locations(cadata=ca_pem)
        self.verified.load_cert_chain(credential)
        self.enrolment = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.enrolment.minimum_version = ssl.TLSVersion.TLSv1_2
        self.enrolment.check_hostname = False
        self.enrolment.verify_mode = ssl.CERT_NONE
        self.enrolment.load_cert_chain(credential)
