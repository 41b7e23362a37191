"""The agent protocol against a real agent process: authentication by the controller's
certificate, idempotent task ids, long-poll, cancel, deadlines, a task log that survives
a restart, loopback-only debug."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.enrol import Credentials, issue, provision_agent
from tests.support.procs import Proc, start_agent

CONTEXT: dict[str, ssl.SSLContext] = {}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[Proc, str, Credentials]]:
    credentials = provision_agent(tmp_path / "state")
    CONTEXT["controller"] = credentials.client_context()
    proc, debug = start_agent(tmp_path / "state")
    yield proc, debug, credentials
    proc.stop()


def call(url: str, method: str = "GET", body: object = None,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, object]]:
    """As the controller (with its certificate) unless another context is given."""
    req = urllib.request.Request(url, method=method,
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30,
                                    context=context or CONTEXT["controller"]) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def refused_handshake(url: str, context: ssl.SSLContext) -> bool:
    try:
        call(url, context=context)
    except (urllib.error.URLError, ssl.SSLError, ConnectionError):
        return True
    return False


def test_commands_need_the_controller_certificate(
        agent: tuple[Proc, str, Credentials], tmp_path: Path) -> None:
    proc, _, credentials = agent
    body = {"task_id": "t1", "payload": {"seconds": 0}}
    status, health = call(f"{proc.url}/healthz")
    assert status == 200 and health["status"] == "ok"
    status, done = call(f"{proc.url}/v1/commands/sleep", "POST", body)
    assert status == 200 and done["state"] == "succeeded"
    # No client certificate at all: the handshake itself is refused, even for /healthz.
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cadata=credentials.ca.cert_pem)
    anonymous.check_hostname = False
    assert refused_handshake(f"{proc.url}/healthz", anonymous)
    # Another agent's certificate, signed by the same CA: made for serving, not for
    # commanding, so the handshake refuses it.
    other_agent = issue(credentials.ca, tmp_path / "other-agent.pem", "strata-agent",
                        client=False, dns_name="e1.hother.agent.strata.invalid")
    assert refused_handshake(f"{proc.url}/v1/tasks/t1", credentials.client_context(other_agent))
    # A client certificate of the CA that does not name the controller gets in, and is
    # refused every command.
    stranger = credentials.client_context(issue(credentials.ca, tmp_path / "stranger.pem",
                                                "someone-else", client=True))
    for url, method, data in ((f"{proc.url}/v1/commands/sleep", "POST",
                               {"task_id": "t2", "payload": {"seconds": 0}}),
                              (f"{proc.url}/v1/tasks/t1", "GET", None),
                              (f"{proc.url}/v1/enrol/csr", "POST",
                               {"token_id": "0" * 32, "nonce": "0" * 64})):
        status, err = call(url, method, data, context=stranger)
        assert (status, err["code"]) == (401, "unauthorized"), url
    status, _ = call(f"{proc.url}/v1/tasks/t2")
    assert status == 404, "the stranger's command never ran"


def test_an_agent_not_enrolled_answers_only_health_and_enrolment(tmp_path: Path) -> None:
    proc, _ = start_agent(tmp_path / "state")
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    try:
        status, health = call(f"{proc.url}/healthz", context=unverified)
        assert status == 200 and health["status"] == "ok"
        for path, method in (("/v1/commands/sleep", "POST"), ("/v1/tasks/t1", "GET")):
            status, err = call(f"{proc.url}{path}", method,
                               {"task_id": "t1", "payload": {"seconds": 0}}, unverified)
            assert (status, err["code"]) == (401, "not_enrolled"), path
        status, err = call(f"{proc.url}/v1/enrol/csr", "POST",
                           {"token_id": "0" * 32, "nonce": "0" * 64}, unverified)
        assert (status, err["code"]) == (409, "join_token_missing")
    finally:
        proc.stop()


def test_same_task_id_is_one_execution(agent: tuple[Proc, str, Credentials]) -> None:
    proc, debug, _ = agent
    body = {"task_id": "idem-1", "payload": {"seconds": 0.5}}
    first = call(f"{proc.url}/v1/commands/sleep", "POST", body)
    second = call(f"{proc.url}/v1/commands/sleep", "POST", body)
    assert first[0] == second[0] == 200
    assert first[1]["created_at"] == second[1]["created_at"]
    with urllib.request.urlopen(f"{debug}/debug/tasks") as resp:
        recent = json.loads(resp.read())["recent"]
    assert [t["task_id"] for t in recent].count("idem-1") == 1
    status, err = call(f"{proc.url}/v1/commands/host_info", "POST",
                       {"task_id": "idem-1", "payload": {}})
    assert status == 409 and err["code"] == "task_id_reused"


def test_long_poll_cancel_and_deadline(agent: tuple[Proc, str, Credentials]) -> None:
    proc, _, _ = agent
    # command_wait is 2s by default: a 30s sleep answers 202 (running).
    status, info = call(f"{proc.url}/v1/commands/sleep", "POST",
                        {"task_id": "long", "payload": {"seconds": 30}})
    assert status == 202 and info["state"] == "running"
    status, info = call(f"{proc.url}/v1/tasks/long?wait=1")
    assert status == 202 and 0 < info["progress"] < 100
    status, info = call(f"{proc.url}/v1/tasks/long", "DELETE")
    assert status == 200 and info["state"] == "cancelled"
    status, info = call(f"{proc.url}/v1/commands/sleep", "POST",
                        {"task_id": "late", "deadline": time.time() + 0.5,
                         "payload": {"seconds": 5}})
    assert info["state"] == "failed" and info["error"]["code"] == "timeout"
    status, err = call(f"{proc.url}/v1/tasks/nope")
    assert status == 404
    status, err = call(f"{proc.url}/v1/commands/format_disk", "POST",
                       {"task_id": "x", "payload": {}})
    assert status == 404 and err["code"] == "unknown_command"
    status, err = call(f"{proc.url}/v1/commands/delete_file", "POST",
                       {"task_id": "x", "payload": {"dir": "/tmp/../etc", "file_name": "passwd"}})
    assert status == 400 and err["code"] == "invalid_input"
    status, err = call(f"{proc.url}/v1/commands/delete_file", "POST",
                       {"task_id": "bad id!", "payload": {}})
    assert status == 400


def test_task_log_survives_restart(tmp_path: Path) -> None:
    CONTEXT["controller"] = provision_agent(tmp_path / "state").client_context()
    proc, _ = start_agent(tmp_path / "state")
    try:
        call(f"{proc.url}/v1/commands/sleep", "POST",
             {"task_id": "done", "payload": {"seconds": 0}})
        status, _ = call(f"{proc.url}/v1/commands/sleep", "POST",
                         {"task_id": "cut", "payload": {"seconds": 60}})
        assert status == 202
    finally:
        import signal

        proc.stop(signal.SIGKILL)
    proc, _ = start_agent(tmp_path / "state")
    try:
        status, done = call(f"{proc.url}/v1/tasks/done")
        assert status == 200 and done["state"] == "succeeded"
        status, cut = call(f"{proc.url}/v1/tasks/cut")
        assert cut["state"] == "failed" and cut["error"]["code"] == "interrupted"
    finally:
        proc.stop()


def test_debug_endpoints_only_on_loopback_listener(
        agent: tuple[Proc, str, Credentials]) -> None:
    proc, debug, _ = agent
    assert debug.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{debug}/debug/config") as resp:
        config = json.loads(resp.read())
    assert config["enrolled"] is True
    assert "PRIVATE KEY" not in json.dumps(config)
    status, _ = call(f"{proc.url}/debug/tasks")
    assert status == 404
