"""Facts about a host, and a task that only waits."""

from __future__ import annotations

from pydantic import Field

from shared.protocol.command import Command
from shared.protocol.types import EmptyPayload, HostName, Iqn, Model, StorePath

# Bounds a network report's question: how many servers one request may ask about.
MAX_SERVERS = 32


class NetInterface(Model):
    """A network interface as the kernel reports it (netlink)."""

    name: str
    index: int
    state: str = Field(description="Operational state: UP, DOWN, UNKNOWN (loopback)...")
    mtu: int
    mac: str | None = None
    addresses: list[str] = Field(default_factory=list,
                                 description="Addresses with their prefix, `10.0.0.2/24`.")


class ServerRoute(Model):
    """How this host would reach a storage server: the kernel's answer to `ip route get`."""

    server: str = Field(description="The server as asked about (name or address).")
    address: str | None = Field(default=None, description="The address it resolves to.")
    interface: str | None = None
    source: str | None = Field(default=None,
                               description="The source address packets would carry.")
    gateway: str | None = None
    mtu: int | None = Field(default=None, description="The outgoing interface's MTU.")
    error: str | None = Field(default=None,
                              description="Why there is no route (or no address).")


class NetworkFacts(Model):
    interfaces: list[NetInterface]
    routes: list[ServerRoute] = Field(
        default_factory=list,
        description="For each storage server the host uses or was asked about.")


class NetworkQuery(Model):
    servers: list[HostName] = Field(default_factory=list, max_length=MAX_SERVERS)


class HostInfoResult(Model):
    hostname: str
    agent_id: str = Field(description="The agent's own id, made on its first start and "
                                      "kept: one agent, one host, whatever its address.")
    agent_version: str
    instance: str | None = Field(
        default=None, description="This start of the agent, as `/healthz` names it: a new "
                                  "one after every restart.")
    qemu_img_version: str
    initiator_iqn: Iqn | None = Field(
        default=None, description="The host's iSCSI initiator name, if it has one.")
    network: NetworkFacts | None = Field(
        default=None, description="Interfaces, and routes to the storage servers in use.")


class SleepPayload(Model):
    """A task that only waits: lets operators and tests check the task machinery."""

    seconds: float = Field(ge=0, le=3600)


class SleepResult(Model):
    slept: float


HOST_INFO = Command("host_info", EmptyPayload, HostInfoResult, timeout=60, idempotent=True)
SLEEP = Command("sleep", SleepPayload, SleepResult, idempotent=True)


# How many storages one probe request may name, and the longest a probe may wait.
MAX_PROBES = 64
MAX_PROBE_TIMEOUT = 120.0


class ProbeRequest(Model):
    """Storage roots to prove: a heartbeat file written, read back and removed in each,
    each within `timeout` seconds."""

    paths: list[StorePath] = Field(min_length=1, max_length=MAX_PROBES)
    timeout: float = Field(gt=0, le=MAX_PROBE_TIMEOUT)


class ProbeOutcome(Model):
    path: str
    healthy: bool
    reason: str | None = None
    seconds: float


class ProbeResults(Model):
    results: list[ProbeOutcome]
