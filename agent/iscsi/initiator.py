"""The hypervisor side of iSCSI: making a granted LUN openable by this host's QEMU.

Two connectors behind one interface, as os-brick has one connector per protocol:
`qemu` (QEMU's userspace initiator, in `qemu.py`) and `kernel` (open-iscsi sessions, in
`kernel.py`).
"""

from __future__ import annotations

import abc

from shared.protocol.iscsi import ConnectVolumeResult, IscsiTarget


def read_initiator_name(path: str) -> str | None:
    """The `InitiatorName=` of open-iscsi's configuration, if the host has one."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                if key == "InitiatorName" and value:
                    return value
    except FileNotFoundError:
        return None
    return None


class Initiator(abc.ABC):
    def __init__(self, initiator_iqn: str) -> None:
        self.iqn = initiator_iqn

    @abc.abstractmethod
    async def connect(self, target: IscsiTarget) -> ConnectVolumeResult: ...

    @abc.abstractmethod
    async def disconnect(self, target: IscsiTarget) -> None: ...
