"""API authentication against a real controller: every route but /healthz needs a token
(401), each route a role (403), tokens are stored hashed and shown once, revoking locks a
token out, and every mutating call is in the audit log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cli.client import ApiError, Client
from controller.api.routes import ROUTES
from controller.auth.tokens import KnownTokens
from tests.conftest import Stack
from tests.support.procs import ROOT


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'strata.sqlite'}"


def status_of(client: Client, method: str, path: str) -> int:
    try:
        client.request(method, path, {} if method == "POST" else None)
    except ApiError as exc:
        return exc.status
    return 200


def test_every_route_needs_a_token_but_healthz(stack: Stack) -> None:
    anonymous = Client(stack.controller.url)
    wrong = Client(stack.controller.url, "st1.00000000-0000-0000-0000-000000000000.nope")
    for route in ROUTES:
        path = re.sub(r"{\w+}", "x", route.path)
        assert status_of(anonymous, route.method, path) == 401, route.path
        assert status_of(wrong, route.method, path) == 401, route.path
    assert status_of(anonymous, "GET", "/v1/openapi.json") == 401
    with urllib.request.urlopen(stack.controller.url + "/healthz", timeout=10) as resp:
        assert resp.status == 200
    doc = stack.api.get("/v1/openapi.json")
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]


def test_roles(stack: Stack) -> None:
    made = {role: stack.api.post("/v1/tokens", {"name": f"t-{role}", "role": role})
            for role in ("reader", "operator")}
    reader = Client(stack.controller.url, made["reader"]["token"])
    operator = Client(stack.controller.url, made["operator"]["token"])
    assert reader.get("/v1/volumes")["items"] == []
    for client, method, path in ((reader, "POST", "/v1/volumes"),
                                 (reader, "DELETE", "/v1/images/x"),
                                 (operator, "POST", "/v1/hosts"),
                                 (operator, "DELETE", f"/v1/primary-storages/{stack.primary_id}"),
                                 (operator, "GET", "/v1/tokens"),
                                 (operator, "GET", "/v1/audit")):
        assert status_of(client, method, path) == 403, (method, path)
    job = operator.post("/v1/volumes", {"name": "v", "primary_storage_id": stack.primary_id,
                                        "size": 1 << 20})
    assert stack.wait(job)["state"] == "succeeded"


def test_tokens_are_shown_once_stored_hashed_and_revocable(stack: Stack) -> None:
    made = stack.api.post("/v1/tokens", {"name": "ci", "role": "operator"})
    secret = made["token"].rsplit(".", 1)[1]
    listed = stack.api.get("/v1/tokens")["items"]
    assert {t["name"] for t in listed} == {"admin", "ci"}
    assert all("token" not in t for t in listed)
    assert secret not in str(stack.api.get("/v1/tokens"))
    for db_file in (stack.state / "controller").glob("strata.sqlite*"):
        assert secret.encode() not in db_file.read_bytes()
    assert not [p for p in Path(stack.db_url.removeprefix("sqlite:///")).parent.glob(
        "strata.sqlite*") if secret.encode() in p.read_bytes()]
    ci = Client(stack.controller.url, made["token"])
    assert ci.get("/v1/volumes")["items"] == []
    revoked = stack.api.delete(f"/v1/tokens/{made['id']}")
    assert revoked["revoked_at"] is not None
    assert status_of(ci, "GET", "/v1/volumes") == 401
    with pytest.raises(ApiError) as info:
        stack.api.post("/v1/tokens", {"name": "ci", "role": "reader"})
    assert info.value.status == 409
    admin_id = next(t["id"] for t in listed if t["name"] == "admin")
    with pytest.raises(ApiError) as info:
        stack.api.delete(f"/v1/tokens/{admin_id}")
    assert (info.value.status, info.value.code) == (409, "revoking_self")


def test_mutating_calls_are_audited(stack: Stack) -> None:
    reader = Client(stack.controller.url,
                    stack.api.post("/v1/tokens", {"name": "r", "role": "reader"})["token"])
    stack.wait(stack.api.post("/v1/volumes", {"name": "v", "primary_storage_id":
                                              stack.primary_id, "size": 1 << 20}))
    assert status_of(reader, "POST", "/v1/volumes") == 403
    with pytest.raises(ApiError):
        stack.api.post("/v1/volumes", {"name": "../x", "primary_storage_id": stack.primary_id,
                                       "size": 1})
    events = stack.api.get("/v1/audit?limit=500")["items"]
    created = [e for e in events if e["route"] == "/v1/volumes" and e["status"] == 202]
    assert created and created[0]["token_name"] == "admin"
    assert created[0]["resource_type"] == "volume" and created[0]["resource_id"]
    assert [e for e in events if e["token_name"] == "r" and e["status"] == 403]
    assert [e for e in events if e["status"] == 400 and e["code"] == "invalid_input"]
    assert not [e for e in events if e["method"] == "GET"]


def test_controller_cli_manages_tokens(stack: Stack) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "controller", "--state-dir", str(stack.state / "controller"),
            "--database-url", stack.db_url, "--no-local-agent"]
    out = subprocess.run([*base, "tokens", "create", "ops", "--role", "operator"],
                         capture_output=True, text=True, env=env, check=True, timeout=60)
    token = out.stdout.strip()
    assert Client(stack.controller.url, token).get("/v1/images")["items"] == []
    listed = subprocess.run([*base, "tokens", "list"], capture_output=True, text=True,
                            env=env, check=True, timeout=60).stdout
    assert '"name": "ops"' in listed and token.rsplit(".", 1)[1] not in listed
    token_id = token.split(".")[1]
    ops = Client(stack.controller.url, token)
    assert ops.get("/v1/images")["items"] == []
    subprocess.run([*base, "tokens", "revoke", token_id], env=env, check=True, timeout=60,
                   capture_output=True)
    # Revoked by another process: the running controller reads the row again once its
    # entry is older than KnownTokens.ttl.
    deadline = time.monotonic() + KnownTokens().ttl + 0.5
    while status_of(ops, "GET", "/v1/images") != 401:
        assert time.monotonic() < deadline, "a revoked token still let in"
        time.sleep(0.05)
