"""The enrolment exchange without a network: join tokens, MACs, the agent's checks on
what it is given, and the names the controller's CA puts in agent certificates."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from agent.enrolment import AgentTls, is_controller
from controller.agentchannel import agent_server_name
from controller.auth.agentca import AGENT_CN
from shared import pki
from shared.errors import Conflict, InvalidInput, JoinTokenMismatch, JoinTokenMissing
from shared.protocol.enrol import (
    CONTROLLER_CN,
    CertRequest,
    CsrRequest,
    JoinToken,
    cert_mac,
    csr_mac,
    mac_matches,
)

TOKEN = JoinToken("ab" * 16, "s" * 43)
NONCE = "cd" * 32
HOST_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def test_join_tokens_round_trip_and_refuse_anything_else() -> None:
    assert JoinToken.parse(str(TOKEN) + "\n") == TOKEN
    for bad in ("", "st1." + "ab" * 16 + "." + "s" * 43, str(TOKEN) + "x", "sj1.ab.cd"):
        with pytest.raises(InvalidInput):
            JoinToken.parse(bad)


def test_macs_bind_every_part() -> None:
    mac = csr_mac("secret", TOKEN.token_id, NONCE, "agent-1", "csr")
    assert mac_matches(mac, csr_mac("secret", TOKEN.token_id, NONCE, "agent-1", "csr"))
    for other in (csr_mac("secret2", TOKEN.token_id, NONCE, "agent-1", "csr"),
                  csr_mac("secret", TOKEN.token_id, "ef" * 32, "agent-1", "csr"),
                  csr_mac("secret", TOKEN.token_id, NONCE, "agent-2", "csr"),
                  csr_mac("secret", TOKEN.token_id, NONCE, "agent-1", "csr2"),
                  # parts are length-prefixed: moving a boundary changes the MAC
                  csr_mac("secret", TOKEN.token_id, NONCE, "agent-1c", "sr")):
        assert not mac_matches(mac, other)
    assert cert_mac("secret", NONCE, "cert", "ca") != cert_mac("secret", NONCE, "certca", "")


def test_agent_names_fit_dns_labels() -> None:
    name = agent_server_name(HOST_ID, "0123456789abcdef")
    assert name == "e0123456789abcdef.h0f1e2d3c4b5a69788796a5b4c3d2e1f0.agent.strata.invalid"
    assert all(len(label) <= 63 for label in name.split("."))


def agent_tls(tmp_path: Path, token: JoinToken | None = TOKEN) -> AgentTls:
    if token is not None:
        (tmp_path / "join-token").write_text(f"{token}\n")
    return AgentTls(str(tmp_path / "tls"), str(tmp_path / "join-token"), "agent-1")


def sign(ca: pki.KeyPair, csr_pem: str) -> str:
    name = agent_server_name(HOST_ID, "0" * 16)
    return pki.cert_pem(pki.issue(ca, pki.csr_public_key(csr_pem), AGENT_CN, days=1,
                                  client=False, dns_name=name))


def test_the_agent_enrols_only_with_its_join_token_and_its_key(tmp_path: Path) -> None:
    tls = agent_tls(tmp_path)
    assert not tls.enrolled and tls.context.verify_mode == ssl.CERT_NONE
    answer = tls.begin(CsrRequest(token_id=TOKEN.token_id, nonce=NONCE))
    assert mac_matches(answer.mac, csr_mac(TOKEN.secret, TOKEN.token_id, NONCE, "agent-1",
                                           answer.csr_pem))
    ca = pki.make_ca("test", 1)
    cert = sign(ca, answer.csr_pem)

    def request(cert_pem: str = cert, ca_pem: str = ca.cert_pem, secret: str = TOKEN.secret,
                nonce: str = NONCE) -> CertRequest:
        return CertRequest(nonce=nonce, cert_pem=cert_pem, ca_pem=ca_pem,
                           mac=cert_mac(secret, nonce, cert_pem, ca_pem))

    with pytest.raises(JoinTokenMismatch):
        tls.complete(request(secret="x" * 43))
    with pytest.raises(Conflict):
        tls.complete(request(nonce="ef" * 32))
    other_key = pki.issue(ca, pki.new_key().public_key(), AGENT_CN, days=1, client=False)
    with pytest.raises(InvalidInput, match="not for the key"):
        tls.complete(request(cert_pem=pki.cert_pem(other_key)))
    with pytest.raises(InvalidInput, match="not signed"):
        tls.complete(request(ca_pem=pki.make_ca("other", 1).cert_pem))
    assert not tls.enrolled and not (tmp_path / "tls").exists()

    done = tls.complete(request())
    assert tls.enrolled and tls.context.verify_mode == ssl.CERT_REQUIRED
    assert done.fingerprint == pki.fingerprint(pki.load_cert(cert))
    assert not (tmp_path / "join-token").exists()
    for name in ("credential.pem", "ca.pem"):
        assert (tmp_path / "tls" / name).stat().st_mode & 0o777 == 0o600
    # At the next start, the agent comes up enrolled.
    again = agent_tls(tmp_path, token=None)
    assert again.enrolled and again.context.verify_mode == ssl.CERT_REQUIRED


def test_a_missing_or_other_join_token_is_a_clear_refusal(tmp_path: Path) -> None:
    with pytest.raises(JoinTokenMissing, match="join-token"):
        agent_tls(tmp_path, token=None).begin(CsrRequest(token_id=TOKEN.token_id,
                                                          nonce=NONCE))
    with pytest.raises(JoinTokenMismatch):
        agent_tls(tmp_path).begin(CsrRequest(token_id="ef" * 16, nonce=NONCE))
    (tmp_path / "join-token").write_text("garbage")
    with pytest.raises(JoinTokenMismatch):
        agent_tls(tmp_path, token=None).begin(CsrRequest(token_id=TOKEN.token_id,
                                                          nonce=NONCE))


def test_certificates_are_issued_for_one_role() -> None:
    ca = pki.make_ca("test", 1)
    client = pki.issue(ca, pki.new_key().public_key(), CONTROLLER_CN, days=1, client=True)
    usage = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    pki.check_issued_by(client, pki.load_cert(ca.cert_pem))
    with pytest.raises(InvalidInput):
        pki.check_issued_by(client, pki.load_cert(pki.make_ca("other", 1).cert_pem))
    with pytest.raises(InvalidInput):
        pki.csr_public_key("not a csr")


def test_only_the_controller_subject_commands() -> None:
    assert is_controller({"subject": ((("commonName", CONTROLLER_CN),),)})
    assert not is_controller({"subject": ((("commonName", AGENT_CN),),)})
    assert not is_controller({"subject": ((("commonName", CONTROLLER_CN),),
                                          (("commonName", "x"),))})
    assert not is_controller(None) and not is_controller({})
