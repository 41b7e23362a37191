"""Fixtures: real agent and controller processes, a PostgreSQL server, an image server.

`./dev test` runs the suite on two pytest-xdist workers (`--dist loadfile`: a module's
tests stay on one worker, so module-scoped fixtures are made once). Whatever a test or
fixture starts must therefore be able to run twice on one machine at the same time:

- TCP ports from `tests.support.procs.free_port` (each worker has its own share), never
  a fixed one; a server that needs fixed ports (nfs-ganesha: rpcbind's 111, NFS's 2049)
  runs in a network namespace of its own, like the `nfs` fixture's.
- Network namespaces and addresses from `tests.support.netns` (a lab: each worker has
  its own share of the 10.253.N.0/24 subnets); tgtd from `tests.support.tgtd` (control
  sockets from the worker's share).
- Files, sockets, pid and lock files under the test's tmp_path (or tmp_path_factory for
  session fixtures, which are made once per worker), never fixed paths in /run, /etc,
  /var or the checkout; daemons that insist on system paths get a mount namespace
  (`tests.support.libvirtd`, the `nfs` fixture).
- No assertion about machine-wide state (processes by name, addresses, free space) that
  the other worker's tests could change: match what the test itself started (its pids,
  a marker argument unique in the suite).
- `tests.support.workers` tells which worker a process is, to split anything else.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.client import Client
from tests.support.enrol import enrol_host
from tests.support.fileserver import FileServer
from tests.support.libvirtd import Libvirtd
from tests.support.netns import lab
from tests.support.nfsserver import NfsServer
from tests.support.postgres import PostgresServer
from tests.support.procs import Proc, start_agent, start_controller
from tests.support.s3server import S3Server
from tests.support.sshd import SshServer


def pytest_configure(config: pytest.Config) -> None:
    """Workers take modules in the order collected (see below), not largest first."""
    if config.pluginmanager.hasplugin("xdist"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real-kernel tier first (its one guest boot is the longest module, and
    overlaps everything else on the other worker), then the integration and fuzz tiers,
    then the short unit and database tests, which even out the workers' ends."""
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("kernel"):
            return 0
        return 1 if {"integration", "fuzz"} & set(item.path.parts) else 2
    items.sort(key=rank)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs against embedded SQLite and against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'strata.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()


@pytest.fixture(scope="session")
def nfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NfsServer]:
    """nfs-ganesha on the standard NFS ports (QEMU's `nfs://` URLs carry none), which a
    network namespace has once: so each worker's server is a lab host of its own, which
    the tests' processes reach. One per worker session, a directory per test."""
    with lab() as net:
        server = NfsServer(tmp_path_factory.mktemp("nfs"), net.add_host("nfs"))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def libvirtd(tmp_path: Path) -> Iterator[Libvirtd]:
    """A private libvirtd (TCG domains, no network); stopped with every QEMU it started."""
    daemon = Libvirtd(tmp_path / "libvirt")
    yield daemon
    daemon.stop()


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = SshServer(tmp_path / "sshd")
    yield server
    server.stop()


@pytest.fixture
def s3() -> Iterator[S3Server]:
    server = S3Server()
    yield server
    server.stop()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    d = tmp_path / "www"
    d.mkdir()
    return d


@pytest.fixture
def file_server(image_dir: Path) -> Iterator[FileServer]:
    server = FileServer(image_dir)
    yield server
    server.close()


def make_image(directory: Path, name: str, fmt: str = "qcow2", size: str = "16M",
               backing: Path | None = None) -> tuple[Path, str]:
    """A small image made by qemu-img, and its sha256."""
    path = directory / name
    argv = ["qemu-img", "create", "-q", "-f", fmt]
    if backing is not None:
        argv += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run([*argv, str(path), size], check=True)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def raw_lun(directory: Path, name: str) -> Path:
    """A sparse raw file as a LUN or its snapshot is, with a pattern written into it."""
    path, _ = make_image(directory, name, fmt="raw", size="8M")
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x6c 1M 64k", str(path)],
                   check=True, capture_output=True)
    return path


def reads_as_raw(qcow2: Path, raw: Path) -> bool:
    """Whether the qcow2 file `qcow2` is a standalone copy of what `raw` holds."""
    info = subprocess.run(["qemu-img", "info", "-f", "qcow2", str(qcow2)],
                          capture_output=True, text=True)
    same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(qcow2),
                           str(raw)], capture_output=True)
    return info.returncode == 0 and "backing file" not in info.stdout and same.returncode == 0


@dataclass
class Stack:
    """A controller and one agent, with a host, a local primary and a dir backup storage."""

    controller: Proc
    agent: Proc
    agent_debug: str
    api: Client
    host_id: str
    primary_id: str
    backup_id: str
    primary_path: Path
    backup_path: Path
    state: Path
    db_url: str

    def wait(self, accepted: dict[str, object], ok: bool = True) -> dict[str, object]:
        job = self.api.wait_job(str(accepted["job_id"]), timeout=120)
        if ok:
            assert job["state"] == "succeeded", job
        return job

    def restart_controller(self, config: dict[str, object] | None = None) -> None:
        self.controller.stop()
        port = int(self.controller.url.rsplit(":", 1)[1])
        self.controller = start_controller(self.state / "controller", self.db_url, port=port,
                                           config=config)
        self.api = Client(self.controller.url, self.api.token)


@pytest.fixture
def stack(tmp_path: Path, db_url: str) -> Iterator[Stack]:
    agent, debug = start_agent(tmp_path / "agent")
    try:
        controller = start_controller(tmp_path / "controller", db_url)
    except BaseException:
        agent.stop()
        raise
    api = Client(controller.url, controller.token)
    s = Stack(controller, agent, debug, api, "", "", "", tmp_path / "primary",
              tmp_path / "backup", tmp_path, db_url)
    try:
        s.host_id = enrol_host(api, "host-a", agent)
        s.primary_id = str(s.wait(api.post("/v1/primary-storages", {
            "name": "local-a", "type": "local", "config": {"path": str(s.primary_path)},
            "hosts": [s.host_id], "overprovision_factor": 2.0}))["resource_id"])
        s.backup_id = str(s.wait(api.post("/v1/backup-storages", {
            "name": "store", "type": "dir", "config": {"path": str(s.backup_path)}}))
            ["resource_id"])
        yield s
    finally:
        # A test may have restarted either process: stop the ones running now.
        s.controller.stop()
        s.agent.stop()
