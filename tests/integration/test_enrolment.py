"""Per-host agent credentials, against real controller and agent processes and real TLS
handshakes on loopback: enrolment with a one-time join token, listeners that are not
the host's agent (they learn nothing), another agent's certificate, expired and used
join tokens, revocation and enrolling again."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.client import ApiError, Client
from shared import pki
from tests.conftest import Stack
from tests.integration.test_cli import strata
from tests.support.enrol import add_host, agent_state, controller_context, put_join_token
from tests.support.impostor import Impostor
from tests.support.procs import ROOT, Proc, admin_token, free_port, spawn, start_agent


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


@pytest.fixture
def agent_b(tmp_path: Path) -> Iterator[Proc]:
    proc, _ = start_agent(tmp_path / "agent-b")
    yield proc
    proc.stop()


def failed(stack: Stack, accepted: dict[str, Any], code: str) -> dict[str, Any]:
    job = stack.wait(accepted, ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == code, job
    return job


def reconnect(stack: Stack, host_id: str) -> dict[str, Any]:
    return stack.api.post(f"/v1/hosts/{host_id}/reconnect")  # type: ignore[no-any-return]


def handshake_refused(url: str, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10, context=context):
            return False
    except (urllib.error.URLError, ssl.SSLError, ConnectionError):
        return True


def served_fingerprint(agent: Proc) -> str:
    pem = (agent_state(agent) / "tls" / "credential.pem").read_text()
    cert = pem[pem.index("-----BEGIN CERTIFICATE-----"):]
    return pki.fingerprint(pki.load_cert(cert))


def test_enrolment_through_the_api(stack: Stack) -> None:
    """The stack's host was enrolled through POST /v1/hosts and its join token."""
    host = stack.api.get(f"/v1/hosts/{stack.host_id}")
    assert host["enrolled"] and host["state"] == "connected"
    assert host["address"].startswith("https://127.0.0.1:")
    assert host["cert_fingerprint"] == served_fingerprint(stack.agent)
    assert host["join_token_expires_at"] is None and host["cert_expires_at"] > time.time()
    state = agent_state(stack.agent)
    assert not (state / "join-token").exists(), "the agent drops its token once enrolled"
    for name in ("credential.pem", "ca.pem"):
        assert (state / "tls" / name).stat().st_mode & 0o777 == 0o600
    # The agent switched to its new certificate and to requiring the controller's without
    # a restart: a client without a certificate is refused at the handshake now.
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname, anonymous.verify_mode = False, ssl.CERT_NONE
    assert handshake_refused(stack.agent.url, anonymous)
    context = controller_context(stack.state / "controller", state)
    with urllib.request.urlopen(f"{stack.agent.url}/healthz", timeout=10,
                                context=context) as resp:
        assert resp.status == 200

    with pytest.raises(ApiError) as info:
        stack.api.post("/v1/hosts", {"name": "plain", "address": "http://127.0.0.1:1"})
    assert info.value.status == 400 and "https://" in info.value.message


def test_join_tokens_are_shown_once_and_kept_sealed(stack: Stack, agent_b: Proc,
                                                     tmp_path: Path) -> None:
    """As an operator does it with the CLI: `hosts add --wait` prints the token, which
    goes on the host while the job waits for it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STRATA_URL": stack.controller.url,
           "STRATA_TOKEN": stack.controller.token or ""}
    cli = subprocess.Popen([sys.executable, "-m", "cli", "hosts", "add", "host-b",
                            agent_b.url, "--wait"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    assert cli.stdout is not None
    token = cli.stdout.readline().strip()
    put_join_token(agent_state(agent_b), token)
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0 and token not in out + err, (out, err)
    secret = token.rsplit(".", 1)[1]
    assert token.startswith("sj1.")
    host = stack.api.get("/v1/hosts?name=host-b")["items"][0]
    assert host["state"] == "connected" and host["enrolled"]
    listing = json.dumps([stack.api.get("/v1/hosts"), stack.api.get("/v1/audit"),
                          stack.api.get("/v1/jobs?kind=host.connect")])
    assert secret not in listing
    assert secret not in (stack.state / "controller" / "controller.log").read_text()
    assert secret.encode() not in (tmp_path / "strata.sqlite").read_bytes()
    assert secret not in (agent_state(agent_b) / "agent.log").read_text()

    # The CLI prints a new join token once, and revokes.
    made = strata(stack, "hosts", "join-token", host["id"])
    assert made.returncode == 0 and made.stdout.strip().startswith("sj1."), made
    revoked = strata(stack, "--json", "hosts", "revoke", host["id"])
    assert json.loads(revoked.stdout)["reason"] == "credential revoked", revoked


def test_impostors_fail_clearly_and_learn_nothing(stack: Stack, tmp_path: Path) -> None:
    # A TLS listener with a certificate of its own, answering like an agent.
    tls = Impostor(tmp_path)
    accepted = add_host(stack.api, "fake-tls", tls.url, tmp_path / "nowhere")
    job = failed(stack, accepted, "agent_untrusted")
    assert "did not prove" in job["error"]["message"] and "fake-tls" in job["error"]["message"]
    secret = accepted["join_token"].rsplit(".", 1)[1]
    assert tls.received, "the impostor was asked to enrol"
    assert secret.encode() not in tls.received and b"Authorization" not in tls.received
    host = stack.api.get(f"/v1/hosts/{accepted['resource_id']}")
    assert host["state"] == "disconnected" and not host["enrolled"]

    # A plain TCP listener: the handshake fails, no HTTP is sent.
    plain = Impostor(tmp_path, tls=False)
    accepted = add_host(stack.api, "fake-tcp", plain.url, tmp_path / "nowhere")
    failed(stack, accepted, "agent_untrusted")
    assert plain.received and b"HTTP" not in plain.received and b"POST" not in plain.received
    tls.close()
    plain.close()


def test_an_enrolled_hosts_address_taken_over_gets_no_byte(
        stack: Stack, agent_b: Proc, tmp_path: Path) -> None:
    """Behind the host's address: a listener with a certificate of its own, then one
    with another enrolled agent's certificate, signed by the same CA. Both fail the
    handshake and receive no HTTP byte; and that other agent's certificate cannot
    command this host's agent either."""
    host_b = stack.wait(add_host(stack.api, "host-b", agent_b.url, agent_state(agent_b)))
    b_credential = agent_state(agent_b) / "tls" / "credential.pem"
    ca = agent_state(stack.agent) / "tls" / "ca.pem"
    as_b = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    as_b.load_verify_locations(cafile=str(ca))
    as_b.check_hostname = False
    as_b.load_cert_chain(str(b_credential))
    assert handshake_refused(stack.agent.url, as_b)

    port = int(stack.agent.url.rsplit(":", 1)[1])
    stack.agent.stop()
    for credential in (None, b_credential):
        impostor = Impostor(tmp_path, port=port, credential=credential)
        try:
            job = failed(stack, reconnect(stack, stack.host_id), "agent_untrusted")
            assert "did not prove it is the enrolled agent of host host-a" in \
                job["error"]["message"]
            assert impostor.connections and not impostor.received, impostor.received
        finally:
            impostor.close()
    assert stack.api.get(f"/v1/hosts/{host_b['resource_id']}")["state"] == "connected"


def test_expired_and_used_join_tokens_are_refused(stack: Stack, agent_b: Proc) -> None:
    stack.restart_controller({"join_token_ttl": 2, "agent_unreachable_timeout": 3})
    # Expired: the token reaches the host too late.
    accepted = stack.api.post("/v1/hosts", {"name": "host-b", "address": agent_b.url})
    job = failed(stack, accepted, "join_token_missing")
    assert "join token" in job["error"]["message"]
    host_id = str(accepted["resource_id"])
    time.sleep(2)
    put_join_token(agent_state(agent_b), accepted["join_token"])
    failed(stack, reconnect(stack, host_id), "join_token_expired")

    # A token replaced by a newer one no longer works.
    first = stack.api.post(f"/v1/hosts/{host_id}/join-token")["join_token"]
    second = stack.api.post(f"/v1/hosts/{host_id}/join-token")["join_token"]
    put_join_token(agent_state(agent_b), first)
    failed(stack, reconnect(stack, host_id), "join_token_mismatch")
    put_join_token(agent_state(agent_b), second)
    stack.wait(reconnect(stack, host_id))

    # Used: once enrolled, the same token put back does not enrol the agent again.
    put_join_token(agent_state(agent_b), second)
    stack.api.post(f"/v1/hosts/{host_id}/join-token")
    failed(stack, reconnect(stack, host_id), "join_token_mismatch")
    assert stack.api.get(f"/v1/hosts/{host_id}")["enrolled"], "its credential still holds"


def test_revocation_locks_the_host_out_until_enrolled_again(stack: Stack,
                                                            tmp_path: Path) -> None:
    old = tmp_path / "old-credential.pem"
    shutil.copy(agent_state(stack.agent) / "tls" / "credential.pem", old)
    old_fingerprint = served_fingerprint(stack.agent)

    revoked = stack.api.post(f"/v1/hosts/{stack.host_id}/revoke")
    assert (revoked["state"], revoked["reason"], revoked["enrolled"]) == (
        "disconnected", "credential revoked", False)
    job = failed(stack, reconnect(stack, stack.host_id), "agent_untrusted")
    assert "join token" in job["error"]["message"]
    assert stack.api.get(f"/v1/hosts/{stack.host_id}")["reason"].startswith(
        "credential revoked; ")

    made = stack.api.post(f"/v1/hosts/{stack.host_id}/join-token")
    assert made["host_id"] == stack.host_id
    put_join_token(agent_state(stack.agent), made["join_token"])
    stack.wait(reconnect(stack, stack.host_id))
    host = stack.api.get(f"/v1/hosts/{stack.host_id}")
    assert host["state"] == "connected" and host["enrolled"]
    assert host["cert_fingerprint"] != old_fingerprint
    assert host["cert_fingerprint"] == served_fingerprint(stack.agent)
    stack.wait(stack.api.post("/v1/volumes", {"name": "after", "size": 1 << 20,
                                              "primary_storage_id": stack.primary_id}))

    # The revoked certificate, signed by the CA, served at the host's address: refused.
    port = int(stack.agent.url.rsplit(":", 1)[1])
    stack.agent.stop()
    impostor = Impostor(tmp_path, port=port, credential=old)
    try:
        failed(stack, reconnect(stack, stack.host_id), "agent_untrusted")
        assert impostor.connections and not impostor.received
    finally:
        impostor.close()
    stack.agent, _ = start_agent(agent_state(stack.agent), port=port)
    stack.wait(reconnect(stack, stack.host_id))



def test_the_local_agent_enrols_with_no_manual_step(tmp_path: Path) -> None:
    """`./dev start`'s set-up: the seeded host enrols on first start, and again at a
    start that finds the local agent without its credential (an older set-up, or its
    state removed), with a fresh join token the controller writes for it."""
    port, agent_port = free_port(), free_port()
    config = tmp_path / "controller.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'local_agent_listen = "127.0.0.1:{agent_port}"\n'
                      f'local_agent_debug_listen = "127.0.0.1:{free_port()}"\n')

    def start() -> Proc:
        return spawn("controller", ["--config", str(config)], tmp_path / "c.log",
                     f"http://127.0.0.1:{port}")

    def enrolled(api: Client, not_with: str | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            hosts = api.get("/v1/hosts")["items"]
            host: dict[str, Any] = hosts[0] if hosts else {}
            if host.get("state") == "connected" and host.get("enrolled") and \
                    host["cert_fingerprint"] != not_with:
                return host
            time.sleep(0.2)
        raise AssertionError(api.get("/v1/hosts"))

    proc = start()
    try:
        api = Client(proc.url, admin_token(tmp_path / "state"))
        first = enrolled(api)["cert_fingerprint"]
    finally:
        proc.stop()
    shutil.rmtree(tmp_path / "state" / "agent" / "tls")
    proc = start()
    try:
        enrolled(api, not_with=first)
        assert not (tmp_path / "state" / "agent" / "join-token").exists()
    finally:
        proc.stop()
