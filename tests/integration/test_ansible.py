"""The Ansible role as an operator runs it: `ansible-playbook ansible/agent.yml` over SSH
to two "hosts", network namespaces each running sshd on its own address
(tests/support/netns.py). The role configures and starts their agents (with
start-stop-daemon: no systemd here), the controller enrols them with the join tokens
the play put in place, a volume is made through one of them, and a second run changes
nothing.

The namespaces share this machine's file system, so the inventory gives each host its
own paths; packages and the wheel are left out (the code is this checkout)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.client import Client
from tests.support.netns import lab
from tests.support.procs import ROOT, free_port, start_controller
from tests.support.sshd import SshServer

IQN = "iqn.2026-11.org.strata.test:ansible-{}"


def playbook(inventory: Path, work: Path, book: Path = ROOT / "ansible" / "agent.yml") -> str:
    ansible = Path(sys.executable).parent / "ansible-playbook"
    if not ansible.exists():
        pytest.fail("ansible-playbook is not installed (pip install -e .[test])")
    env = {**os.environ, "ANSIBLE_HOME": str(work / "ansible-home"),
           "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
           "ANSIBLE_REMOTE_TEMP": str(work / "ansible-remote-tmp"),
           "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_RETRY_FILES_ENABLED": "False"}
    env["ANSIBLE_ROLES_PATH"] = str(ROOT / "ansible" / "roles")
    proc = subprocess.run([str(ansible), "-i", str(inventory), str(book)],
                          capture_output=True, text=True, env=env, timeout=300)
    with open(work / "ansible.log", "a") as log:
        log.write(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines: per host, ok/changed/failed... counts."""
    found = {}
    for line in output.split("PLAY RECAP", 1)[1].splitlines():
        if ":" in line:
            host, counts = line.split(":", 1)
            found[host.strip()] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return found


def test_role_renders_a_unit_systemd_accepts(tmp_path: Path) -> None:
    """The unit the role writes for systemd hosts: the shipped one with this host's
    command line, and still valid."""
    book = tmp_path / "unit.yml"
    book.write_text(json.dumps([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "vars": {"strata_unit_dir": str(tmp_path), "strata_unit_name": "agent-x",
                 "strata_agent_service_manager": "none",
                 "strata_config_path": str(tmp_path / "agent.toml"),
                 "strata_agent_command": [sys.executable, "-m", "agent"],
                 "strata_agent_workdir": str(ROOT),
                 "ansible_python_interpreter": sys.executable},
        "tasks": [{"ansible.builtin.include_role": {"name": "strata_agent",
                                                    "tasks_from": "unit"}}]}]))
    playbook(tmp_path / "none", tmp_path, book)
    unit = (tmp_path / "agent-x.service").read_text()
    assert f"ExecStart={sys.executable} -m agent --config {tmp_path / 'agent.toml'}\n" in unit
    assert "Type=notify" in unit and f"WorkingDirectory={ROOT}" in unit
    proc = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "agent-x.service")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def stop_agent(pidfile: Path) -> None:
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def test_playbook_deploys_two_hosts_the_controller_enrols_them_and_reruns_change_nothing(
        tmp_path: Path, file_server: object) -> None:
    if shutil.which("start-stop-daemon") is None:
        pytest.fail("start-stop-daemon (dpkg) is needed for the role's non-systemd mode")
    controller = start_controller(tmp_path / "controller",
                                  f"sqlite:///{tmp_path / 'strata.sqlite'}")
    api = Client(controller.url, controller.token)
    servers: list[SshServer] = []
    with lab() as net:
        try:
            inventory_hosts: dict[str, dict[str, object]] = {}
            jobs = {}
            for name in ("a", "b"):
                host = net.add_host(name)
                sshd = SshServer(tmp_path / f"sshd-{name}", host)
                servers.append(sshd)
                key = tmp_path / f"key-{name}"
                key.write_text(sshd.private_key)
                key.chmod(0o600)
                root = tmp_path / name
                port = free_port()
                accepted = api.post("/v1/hosts", {"name": f"kvm-{name}",
                                                  "address": f"https://{host.address}:{port}"})
                jobs[name] = accepted["job_id"]
                variables = {
                    "ansible_host": host.address, "ansible_port": sshd.port,
                    "ansible_user": "root", "ansible_ssh_private_key_file": str(key),
                    "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                               "-o UserKnownHostsFile=/dev/null",
                    "ansible_python_interpreter": sys.executable,
                    "strata_install_packages": False, "strata_install_code": False,
                    "strata_agent_command": [sys.executable, "-m", "agent"],
                    "strata_agent_workdir": str(ROOT),
                    "strata_agent_service_manager": "start-stop-daemon",
                    "strata_run_dir": str(root / "run"),
                    "strata_config_dir": str(root / "etc"),
                    "strata_config_path": str(root / "etc" / "agent.toml"),
                    "strata_state_dir": str(root / "state"),
                    "strata_target_dir": str(root / "etc" / "target"),
                    "strata_initiator_file": str(root / "etc" / "initiatorname.iscsi"),
                    "strata_initiator_iqn": IQN.format(name),
                    "strata_listen": f"{host.address}:{port}",
                    "strata_join_token": accepted["join_token"],
                    "strata_agent_config": {"download_allow": ["127.0.0.0/8"]},
                }
                inventory_hosts[f"kvm-{name}"] = variables
            inventory = tmp_path / "inventory.json"
            inventory.write_text(json.dumps({"hypervisors": {"hosts": inventory_hosts}}))

            first = recap(playbook(inventory, tmp_path))
            assert all(c["failed"] == 0 and c["changed"] > 0 for c in first.values()), first

            ids = {}
            for name, job_id in jobs.items():
                job = api.wait_job(job_id, timeout=120)
                assert job["state"] == "succeeded", job
                ids[name] = job["resource_id"]
                host = api.get(f"/v1/hosts/{ids[name]}")
                assert host["state"] == "connected"
                assert host["initiator_iqn"] == IQN.format(name)
                token = tmp_path / name / "state" / "join-token"
                assert not token.exists()  # spent and deleted by the agent
                assert (tmp_path / name / "etc" / "target").is_dir()
                assert oct((tmp_path / name / "state").stat().st_mode & 0o777) == "0o700"

            store = api.wait_job(api.post("/v1/primary-storages", {
                "name": "local-a", "type": "local", "config": {"path": str(tmp_path / "ps")},
                "hosts": [ids["a"]]})["job_id"], timeout=120)
            assert store["state"] == "succeeded", store
            volume = api.wait_job(api.post("/v1/volumes", {
                "name": "v1", "primary_storage_id": store["resource_id"],
                "size": 16 << 20})["job_id"], timeout=120)
            assert volume["state"] == "succeeded", volume
            path = api.get(f"/v1/volumes/{volume['resource_id']}")["path"]
            info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", path],
                                             capture_output=True, text=True, check=True).stdout)
            assert info["virtual-size"] == 16 << 20

            second = recap(playbook(inventory, tmp_path))
            assert all(c["changed"] == 0 and c["failed"] == 0 for c in second.values()), second
            assert {api.get(f"/v1/hosts/{i}")["state"] for i in ids.values()} == {"connected"}
        finally:
            for name in ("a", "b"):
                stop_agent(tmp_path / name / "run" / "strata-agent.pid")
            for sshd in servers:
                sshd.stop()
            controller.stop()
