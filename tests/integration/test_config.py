"""Both daemons read a TOML file; bad configuration is a one-line error, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli.client import Client
from tests.support.procs import ROOT, admin_token, free_port, spawn


def run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_daemons_read_toml_config(tmp_path: Path) -> None:
    port, agent_port = free_port(), free_port()
    config = tmp_path / "controller.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
                      f'local_agent_listen = "127.0.0.1:{agent_port}"\n'
                      f'local_agent_debug_listen = "127.0.0.1:{free_port()}"\n')
    proc = spawn("controller", ["--config", str(config)], tmp_path / "c.log",
                 f"http://127.0.0.1:{port}")
    try:
        # Embedded defaults: the local agent is started and the storages seeded.
        api = Client(proc.url, admin_token(tmp_path / "state"))
        for _ in range(100):
            stores = api.get("/v1/backup-storages?state=ready")["items"]
            if stores:
                break
            import time

            time.sleep(0.1)
        assert stores and stores[0]["config"]["path"] == str(tmp_path / "state" / "images")
        host = api.get("/v1/hosts")["items"][0]
        assert host["state"] == "connected" and host["enrolled"], host
        assert host["address"] == f"https://127.0.0.1:{agent_port}"
        # The local agent enrolled with the join token the controller left it, then
        # dropped the token; both credentials are readable by their daemon only.
        state = tmp_path / "state"
        assert not (state / "agent" / "join-token").exists()
        for secret in (state / "tls" / "controller.pem", state / "agent" / "tls" / "ca.pem",
                       state / "agent" / "tls" / "credential.pem"):
            assert secret.stat().st_mode & 0o777 == 0o600, secret
    finally:
        proc.stop()


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('listen = "nowhere"\n')
    for module in ("controller", "agent"):
        result = run(module, "--config", str(bad))
        assert result.returncode != 0
        assert "listen" in result.stderr and "Traceback" not in result.stderr
    result = run("agent", "--debug-listen", "0.0.0.0:9999", "--state-dir", str(tmp_path))
    assert result.returncode != 0 and "loopback" in result.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'red'\n")
    result = run("controller", "--config", str(unknown))
    assert result.returncode != 0 and "colour" in result.stderr
    result = run("controller", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode != 0 and "missing.toml" in result.stderr
