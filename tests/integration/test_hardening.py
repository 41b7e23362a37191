"""Regressions of the adversarial probe (issue: no 500s, no stuck states): bodies and
request lines that used to give a 500 or a plain-text 400, URLs both sides now refuse
with one rule, hosts that aren't agents or are registered twice, jobs bounded when an
agent stops answering, the embedded agent restarted, and caches left filling by a
controller that died. Real controller and agent processes on loopback."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.client import ApiError, Client
from tests.conftest import Stack
from tests.support.enrol import add_host, agent_state, controller_context, server_context
from tests.support.procs import admin_token, free_port, spawn, start_controller


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def raw(url: str, method: str, path: str, body: bytes | None = None,
        token: str | None = None,
        context: ssl.SSLContext | None = None) -> tuple[int, str, dict[str, str]]:
    host, port = url.split("://")[1].split(":")
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, int(port), timeout=30, context=context)
        if url.startswith("https://") else http.client.HTTPConnection(host, int(port),
                                                                       timeout=30))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read().decode(errors="replace")
    conn.close()
    return resp.status, resp.getheader("Content-Type") or "", json.loads(data)


def test_bodies_and_request_lines_that_used_to_break_the_api(stack: Stack) -> None:
    url, token = stack.controller.url, stack.controller.token
    status, _, body = raw(url, "POST", "/v1/volumes", json.dumps(
        {"name": "big", "primary_storage_id": stack.primary_id, "size": 1 << 63}).encode(),
        token)
    assert (status, body["code"]) == (400, "invalid_input")
    for endpoint in ("/v1/volumes", "/v1/hosts", "/v1/images", "/v1/primary-storages"):
        status, ctype, body = raw(url, "POST", endpoint, b"[" * 1000 + b"]" * 1000, token)
        assert (status, body["code"]) == (400, "invalid_input"), endpoint
        assert "deeper" in body["message"] and ctype.startswith("application/json")
    status, ctype, body = raw(url, "GET", "/v1/" + "a" * 9000, None, token)
    assert status == 400 and ctype.startswith("application/json") and body["message"]
    for bad in ("http://", "http:///etc/passwd", "http://h/a b"):
        with pytest.raises(ApiError) as info:
            stack.api.post("/v1/images", {"name": "i", "url": bad,
                                          "backup_storage_id": stack.backup_id})
        assert info.value.status == 400, bad


@pytest.fixture
def not_an_agent(tmp_path: Path) -> Iterator[str]:
    """A web server (HTTPS, a certificate of its own) that answers every request with a
    page, as a mistyped URL would."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        do_GET = do_POST

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    server.socket = server_context(tmp_path / "web.pem").wrap_socket(server.socket,
                                                                     server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_hosts_that_are_not_agents_or_are_known_settle_or_are_refused(
        stack: Stack, not_an_agent: str, tmp_path: Path) -> None:
    job = stack.wait(add_host(stack.api, "web", not_an_agent, tmp_path / "web"), ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "not_an_agent"
    host = stack.api.get(f"/v1/hosts/{job['resource_id']}")
    assert host["state"] == "disconnected" and "Strata agent" in host["reason"]
    for same in (stack.agent.url, stack.agent.url + "/"):
        with pytest.raises(ApiError) as info:
            stack.api.post("/v1/hosts", {"name": "again", "address": same})
        assert (info.value.status, info.value.code) == (409, "address_taken"), same


def test_one_agent_is_one_host_however_its_address_is_spelled(stack: Stack) -> None:
    """Even with the new host's join token on the agent: it is refused before anything
    is signed, and the agent keeps serving its host."""
    port = stack.agent.url.rsplit(":", 1)[1]
    job = stack.wait(add_host(stack.api, "alias", f"https://localhost:{port}",
                              agent_state(stack.agent)), ok=False)
    assert job["state"] == "failed" and job["error"]["code"] == "agent_taken"
    assert "host-a" in job["error"]["message"]
    assert stack.api.get(f"/v1/hosts/{job['resource_id']}")["state"] == "disconnected"
    assert stack.api.get(f"/v1/hosts/{stack.host_id}")["state"] == "connected"
    stack.wait(stack.api.post(f"/v1/hosts/{stack.host_id}/reconnect"))


def test_jobs_on_an_agent_that_stopped_answering_fail_in_bounded_time(
        stack: Stack, tmp_path: Path) -> None:
    stack.controller.stop()
    stack.controller = start_controller(
        tmp_path / "controller", stack.db_url,
        config={"agent_unreachable_timeout": 3, "host_check_interval": 0})
    api = Client(stack.controller.url, stack.controller.token)
    stack.agent.stop(signal.SIGKILL)
    started = time.monotonic()
    job = api.wait_job(str(api.post("/v1/volumes", {
        "name": "v", "primary_storage_id": stack.primary_id, "size": 1 << 20})["job_id"]),
        timeout=60)
    assert job["state"] == "failed" and job["error"]["code"] == "agent_unreachable"
    assert time.monotonic() - started < 30
    volume = api.get(f"/v1/volumes/{job['resource_id']}")
    assert volume["state"] == "error"
    assert api.get(f"/v1/primary-storages/{stack.primary_id}")["capacity"]["allocated"] == 0


def test_an_image_cache_left_filling_is_released_at_start(stack: Stack) -> None:
    """The controller died while a cache was filling, and no job will go on with it."""
    stack.controller.stop()
    db = sqlite3.connect(stack.db_url.removeprefix("sqlite:///"))
    with db:
        now = time.time()
        db.execute("INSERT INTO images (id, name, url, state, created_at, updated_at) "
                   "VALUES ('img-x', 'x', 'http://h/x', 'ready', ?, ?)", (now, now))
        db.execute("INSERT INTO image_caches (id, image_id, primary_storage_id, size, attempt, "
                   "state, created_at, updated_at) VALUES ('c-x', 'img-x', ?, 4096, 1, "
                   "'creating', ?, ?)", (stack.primary_id, now, now))
        db.execute("UPDATE primary_storages SET capacity_allocated = capacity_allocated + 4096 "
                   "WHERE id = ?", (stack.primary_id,))
    db.close()
    stack.restart_controller()
    db = sqlite3.connect(stack.db_url.removeprefix("sqlite:///"))
    state, size = db.execute("SELECT state, size FROM image_caches WHERE id = 'c-x'").fetchone()
    allocated = db.execute("SELECT capacity_allocated FROM primary_storages WHERE id = ?",
                           (stack.primary_id,)).fetchone()[0]
    db.close()
    assert (state, size, allocated) == ("error", 0, 0)


def test_the_embedded_agent_is_restarted(tmp_path: Path) -> None:
    port, agent_port = free_port(), free_port()
    config = tmp_path / "controller.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'local_agent_listen = "127.0.0.1:{agent_port}"\n'
                      f'local_agent_debug_listen = "127.0.0.1:{free_port()}"\n'
                      "host_check_interval = 1\n")
    log = tmp_path / "c.log"
    proc = spawn("controller", ["--config", str(config)], log, f"http://127.0.0.1:{port}")
    try:
        api = Client(proc.url, admin_token(tmp_path / "state"))
        ps = wait_for(lambda: [p for p in api.get("/v1/primary-storages")["items"]
                               if [h["state"] for h in p["hosts"]] == ["connected"]])[0]
        pids = re.findall(r"started local agent \(pid (\d+)\)", log.read_text())
        os.kill(int(pids[-1]), signal.SIGKILL)
        wait_for(lambda: len(re.findall(r"started local agent", log.read_text())) == 2)
        wait_for(lambda: api.get("/v1/hosts")["items"][0]["state"] == "connected")
        job = api.wait_job(str(api.post("/v1/volumes", {
            "name": "after", "primary_storage_id": ps["id"], "size": 1 << 20})["job_id"]),
            timeout=60)
        assert job["state"] == "succeeded", job
    finally:
        proc.stop()


def test_a_late_local_agent_is_seeded_once_it_listens(tmp_path: Path) -> None:
    """A slow host: the local agent cannot listen for a while (its port is held, so it
    exits and is started again with back-off). Seeding waits for it, so the host is
    enrolled and the seeded storages become ready, though a job gives up on an absent
    agent after 2 s here."""
    port, agent_port = free_port(), free_port()
    # Bound, never listening: connections to it are refused and the agent can't bind.
    holder = socket.socket()
    holder.bind(("127.0.0.1", agent_port))
    config = tmp_path / "controller.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'local_agent_listen = "127.0.0.1:{agent_port}"\n'
                      f'local_agent_debug_listen = "127.0.0.1:{free_port()}"\n'
                      "host_check_interval = 1\nagent_unreachable_timeout = 2\n")
    log = tmp_path / "c.log"
    proc = spawn("controller", ["--config", str(config)], log, f"http://127.0.0.1:{port}")
    try:
        api = Client(proc.url, admin_token(tmp_path / "state"))
        wait_for(lambda: "local agent exited" in log.read_text(), timeout=30)
        time.sleep(3)
        holder.close()
        host = wait_for(lambda: [h for h in api.get("/v1/hosts")["items"]
                                 if h["state"] == "connected" and h["enrolled"]])[0]
        assert host["name"] == "local"
        stores = wait_for(lambda: [b for b in api.get("/v1/backup-storages")["items"]
                                   if b["state"] == "ready"])
        assert [b["name"] for b in stores] == ["images"]
        ps = api.get("/v1/primary-storages")["items"]
        assert [(p["state"], [h["state"] for h in p["hosts"]]) for p in ps] == [
            ("ready", ["connected"])]
    finally:
        holder.close()
        proc.stop()


def wait_for(check, timeout: float = 60):  # type: ignore[no-untyped-def]  # any predicate
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_the_agent_answers_protocol_errors_in_json_too(stack: Stack) -> None:
    status, ctype, body = raw(stack.agent.url, "GET", "/v1/" + "a" * 9000,
                              context=controller_context(stack.state / "controller",
                                                         agent_state(stack.agent)))
    assert status == 400 and ctype.startswith("application/json") and body["code"]
