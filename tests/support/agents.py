"""Talking to a real agent process the way the controller does, for agent-level tests:
over mutual TLS, with a credential `tests.support.enrol.provision_agent` made."""

from __future__ import annotations

import itertools
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.enrol import Credentials, provision_agent
from tests.support.procs import Proc, start_agent

_ids = itertools.count()


def start_test_agent(state: Path, config: dict[str, object] | None = None) -> Agent:
    """An agent already enrolled under a test CA, and the controller's side of it."""
    credentials = provision_agent(state)
    proc, debug = start_agent(state, config)
    return Agent(proc, debug, credentials)


@dataclass
class Agent:
    proc: Proc
    debug_url: str
    credentials: Credentials

    @property
    def context(self) -> ssl.SSLContext:
        return self.credentials.client_context()

    def call(self, command: str, payload: dict[str, object]) -> tuple[str, dict[str, object]]:
        """Runs a command to the end: ("succeeded", result) or ("failed", error)."""
        return call_agent(self.proc.url, self.context, command, payload)


def call_agent(url: str, context: ssl.SSLContext, command: str,
               payload: dict[str, object]) -> tuple[str, dict[str, object]]:
    """`Agent.call` for any agent, with the client `context` it accepts (that of the
    controller it enrolled with: `tests.support.enrol.controller_context`)."""
    body = json.dumps({"task_id": f"t{next(_ids)}", "payload": payload}).encode()
    req = urllib.request.Request(
        f"{url}/v1/commands/{command}", data=body, method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60, context=context) as resp:
            info = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return "rejected", json.loads(exc.read())
    while info["state"] == "running":
        with urllib.request.urlopen(f"{url}/v1/tasks/{info['task_id']}?wait=10",
                                    timeout=60, context=context) as resp:
            info = json.loads(resp.read())
    return info["state"], info["result"] if info["state"] == "succeeded" else info["error"]
