"""iSCSI on the agent. A storage server: LUNs made and taken down (`luns`) on a backing
store (`backing`), served by a target driver (`target`: `tgt`, `lio`). A hypervisor: an
initiator (`initiator`: `kernel`, `qemu`). Driver and initiator are chosen here, by the
agent's configuration."""

from __future__ import annotations

import os

from agent.config import AgentConfig
from agent.executor import Executor
from agent.iscsi.initiator import Initiator, read_initiator_name
from agent.iscsi.kernel import KernelInitiator
from agent.iscsi.qemu import QemuInitiator
from agent.iscsi.target import TargetDriver
from agent.tools.qemuimg import QemuImg
from shared.config import parse_listen


def build_target_driver(config: AgentConfig, executor: Executor) -> TargetDriver | None:
    if config.iscsi_target == "tgt":
        from agent.iscsi.tgt import TgtDriver

        return TgtDriver(executor, os.path.join(config.state_dir, "tgt-exports.json"),
                         control_port=config.tgt_control_port)
    if config.iscsi_target == "lio":
        from agent.iscsi.lio import LioDriver

        return LioDriver(os.path.join(config.state_dir, "lio-saveconfig.json"),
                         parse_listen(config.iscsi_portal))
    return None


def build_initiator(config: AgentConfig, executor: Executor,
                    qemu_img: QemuImg) -> Initiator | None:
    iqn = config.initiator_iqn or read_initiator_name(config.initiator_name_file)
    if iqn is None:
        return None
    if config.iscsi_access == "qemu":
        return QemuInitiator(iqn, qemu_img, os.path.join(config.state_dir, "secrets"))
    return KernelInitiator(iqn, executor)
