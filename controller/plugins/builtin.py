"""The plugins Strata ships, registered at controller start."""

from __future__ import annotations

from controller.plugins.dir.provider import PROVIDER as DIR
from controller.plugins.kvm_qcow2 import KvmQcow2Backend
from controller.plugins.local.provider import PROVIDER as LOCAL
from controller.plugins.mediators.local_dir_kvm import LocalFromDirKvm
from controller.plugins.motion import MediatorMotionStrategy
from controller.plugins.registry import PluginRegistry


def default_registry() -> PluginRegistry:
    registry = PluginRegistry()
    registry.add_hypervisor("kvm")
    registry.add_provider(LOCAL)
    registry.add_provider(DIR)
    local_driver = registry.primary_driver("local")
    registry.add_backend(KvmQcow2Backend("local", local_driver))
    registry.add_mediator(LocalFromDirKvm(local_driver))
    registry.add_strategy(MediatorMotionStrategy(registry))
    return registry
