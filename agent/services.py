"""What command handlers work with: the tools, the HTTP client and its URL policy, the
image inspector and the settings."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import aiohttp

from agent.clones import OverlayTemplates
from agent.config import AgentConfig
from agent.executor import Executor
from agent.files import FileStores
from agent.images.check import Inspector
from agent.images.urlpolicy import UrlPolicy
from agent.iscsi.initiator import Initiator
from agent.iscsi.target import TargetDriver
from agent.nfs.mounts import MountTable
from agent.tools.libvirt import Libvirt
from agent.tools.qemuimg import QemuImg


@dataclass
class AgentServices:
    config: AgentConfig
    agent_id: str
    # This start of the agent (`TaskManager.instance`).
    instance: str
    executor: Executor
    qemu_img: QemuImg
    http: aiohttp.ClientSession
    url_policy: UrlPolicy
    inspector: Inspector
    files: FileStores
    mounts: MountTable
    clones: OverlayTemplates
    # The ids of the tasks running now: their temporary files are not leftovers.
    running_tasks: Callable[[], Collection[str]]
    # Whether this agent ran a task that has ended: its temporaries are leftovers.
    task_ended: Callable[[str], bool]
    target_driver: TargetDriver | None = None
    initiator: Initiator | None = None
    libvirt: Libvirt | None = None
