"""Talking to a real agent process the way the controller does, for agent-level tests."""

from __future__ import annotations

import itertools
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.procs import Proc, start_agent

TOKEN = "agent-test-token"
_ids = itertools.count()


def start_test_agent(state: Path, config: dict[str, object] | None = None) -> Agent:
    """An agent whose token is TOKEN (written beside its state directory)."""
    token = state.parent / f"{state.name}.token"
    token.write_text(TOKEN)
    proc, debug = start_agent(state, token, config)
    return Agent(proc, debug)


@dataclass
class Agent:
    proc: Proc
    debug_url: str

    def call(self, command: str, payload: dict[str, object]) -> tuple[str, dict[str, object]]:
        """Runs a command to the end: ("succeeded", result) or ("failed", error)."""
        body = json.dumps({"task_id": f"t{next(_ids)}", "payload": payload}).encode()
        req = urllib.request.Request(
            f"{self.proc.url}/v1/commands/{command}", data=body, method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                info = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return "rejected", json.loads(exc.read())
        while info["state"] == "running":
            with urllib.request.urlopen(urllib.request.Request(
                    f"{self.proc.url}/v1/tasks/{info['task_id']}?wait=10",
                    headers={"Authorization": f"Bearer {TOKEN}"}), timeout=60) as resp:
                info = json.loads(resp.read())
        return info["state"], info["result"] if info["state"] == "succeeded" else info["error"]
