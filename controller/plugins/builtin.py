"""The plugins Strata ships, registered at controller start."""

from __future__ import annotations

from controller.plugins.dir.provider import PROVIDER as DIR
from controller.plugins.iscsi.kvm_backend import IscsiKvmBackend
from controller.plugins.iscsi.provider import PROVIDER as ISCSI
from controller.plugins.kvm_qcow2 import KvmQcow2Backend
from controller.plugins.local.provider import PROVIDER as LOCAL
from controller.plugins.mediators.dir_to_file_cache_kvm import DirToFileCacheKvm
from controller.plugins.mediators.s3_to_file_cache_kvm import S3ToFileCacheKvm
from controller.plugins.mediators.sftp_to_file_cache_kvm import SftpToFileCacheKvm
from controller.plugins.nfs.provider import PROVIDER as NFS
from controller.plugins.registry import PluginRegistry
from controller.plugins.s3.provider import PROVIDER as S3
from controller.plugins.sftp.provider import PROVIDER as SFTP


def default_registry() -> PluginRegistry:
    registry = PluginRegistry()
    registry.add_hypervisor("kvm")
    for provider in (LOCAL, NFS, ISCSI, DIR, SFTP, S3):
        registry.add_provider(provider)
    local, nfs = registry.primary_driver("local"), registry.primary_driver("nfs")
    iscsi = registry.primary_driver("iscsi")
    registry.add_backend(KvmQcow2Backend("local", local))
    registry.add_backend(KvmQcow2Backend("nfs", nfs))
    registry.add_backend(IscsiKvmBackend(iscsi))
    for primary_type, driver in (("local", local), ("nfs", nfs), ("iscsi", iscsi)):
        for cell in (DirToFileCacheKvm, SftpToFileCacheKvm, S3ToFileCacheKvm):
            registry.add_mediator(cell(primary_type, driver))
    return registry
