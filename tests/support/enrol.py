"""Admitting test agents, one way for every test: register the host with the controller
and put the join token it answers in the agent's join-token file, as Ansible or an
operator does; the connect job then enrols the agent. Agent-level tests, which talk to
an agent with no controller, give it a credential made by the same pki module instead."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.enrolment import install_credential
from cli.client import Client
from controller.agentchannel import agent_server_name
from controller.auth.agentca import AGENT_CN
from shared import pki
from shared.protocol.enrol import CONTROLLER_CN, JOIN_TOKEN_FILE
from tests.support.procs import Proc


def put_join_token(agent_state: Path, token: str) -> None:
    """Published whole (temp + rename), as Ansible's copy does: the connect job may
    already be asking the agent, which must never read a half-written file."""
    pki.write_private(str(agent_state / JOIN_TOKEN_FILE), token + "\n")


def agent_state(agent: Proc) -> Path:
    """The state directory of an agent `start_agent` started (its log lives there)."""
    return agent.log.parent


def add_host(api: Client, name: str, address: str, state: Path,
             **body: Any) -> dict[str, Any]:
    """Registers the agent at `address` as host `name` and puts its join token in the
    state directory `state`: the accepted body, whose job enrols and connects it."""
    accepted: dict[str, Any] = api.post("/v1/hosts", {"name": name, "address": address,
                                                      **body})
    state.mkdir(parents=True, exist_ok=True)
    put_join_token(state, accepted["join_token"])
    return accepted


def enrol_host(api: Client, name: str, agent: Proc, **body: Any) -> str:
    """`add_host` for an agent `start_agent` started, waited for: the connected host's id."""
    accepted = add_host(api, name, agent.url, agent_state(agent), **body)
    job = api.wait_job(accepted["job_id"], timeout=120)
    assert job["state"] == "succeeded", job
    return str(job["resource_id"])


def controller_context(controller_state: Path, agent_state: Path) -> ssl.SSLContext:
    """A controller's client certificate, for a test to speak to an agent it enrolled
    (verified against the CA that agent pinned, not by name)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(agent_state / "tls" / "ca.pem"))
    ctx.load_cert_chain(str(controller_state / "tls" / "controller.pem"))
    ctx.check_hostname = False
    return ctx


def server_context(path: Path) -> ssl.SSLContext:
    """A TLS server with a self-signed certificate of its own, as an impostor has."""
    pair = pki.self_signed("impostor", 1)
    pki.write_private(str(path), pair.key_pem + pair.cert_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(path))
    return ctx


@dataclass(frozen=True)
class Credentials:
    """What the controller would hold for an agent provisioned by `provision_agent`."""

    ca: pki.KeyPair
    controller: Path  # the controller's key and client certificate
    server_name: str

    def client_context(self, cert: Path | None = None) -> ssl.SSLContext:
        """Presents `cert` (the controller's by default) and verifies the agent against
        the CA; not its name, since urllib connects by address."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cadata=self.ca.cert_pem)
        ctx.load_cert_chain(str(cert or self.controller))
        ctx.check_hostname = False
        return ctx


def issue(ca: pki.KeyPair, path: Path, common_name: str, *, client: bool,
          dns_name: str | None = None) -> Path:
    """A key and a certificate the CA signs, written to `path` (one PEM file)."""
    key = pki.new_key()
    cert = pki.issue(ca, key.public_key(), common_name, days=1, client=client,
                     dns_name=dns_name)
    pki.write_private(str(path), pki.key_pem(key) + pki.cert_pem(cert))
    return path


def provision_agent(state: Path) -> Credentials:
    """A fresh CA, an agent credential under `state/tls` as enrolment would leave it,
    and a controller client certificate beside `state`."""
    ca = pki.make_ca("test CA", 1)
    name = agent_server_name("test-host", "0" * 16)
    key = pki.new_key()
    cert = pki.issue(ca, key.public_key(), AGENT_CN, days=1, client=False, dns_name=name)
    install_credential(str(state / "tls"), pki.key_pem(key), pki.cert_pem(cert), ca.cert_pem)
    controller = issue(ca, state.parent / f"{state.name}.controller.pem", CONTROLLER_CN,
                       client=True)
    return Credentials(ca, controller, name)
