"""Facts about a host, and a task that only waits."""

from __future__ import annotations

from pydantic import Field

from shared.protocol.command import Command
from shared.protocol.types import EmptyPayload, Iqn, Model


class HostInfoResult(Model):
    hostname: str
    agent_id: str = Field(description="The agent's own id, made on its first start and "
                                      "kept: one agent, one host, whatever its address.")
    agent_version: str
    qemu_img_version: str
    initiator_iqn: Iqn | None = Field(
        default=None, description="The host's iSCSI initiator name, if it has one.")


class SleepPayload(Model):
    """A task that only waits: lets operators and tests check the task machinery."""

    seconds: float = Field(ge=0, le=3600)


class SleepResult(Model):
    slept: float


HOST_INFO = Command("host_info", EmptyPayload, HostInfoResult, timeout=15)
SLEEP = Command("sleep", SleepPayload, SleepResult)
