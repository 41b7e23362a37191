"""The plugins Strata ships and the matrix they make: storage types of both roles, a
backend per (primary type, hypervisor), and a cell per (primary type, backup type,
hypervisor) named in the direction the data go. `default_registry()` registers them;
`GET /v1/capabilities` lists them from there."""

from __future__ import annotations

from controller.plugins.dir.kvm import DirKvmMediator
from controller.plugins.dir.provider import DIR
from controller.plugins.interfaces.mediator import Cell
from controller.plugins.iscsi.kvm import ISCSI_KVM
from controller.plugins.iscsi.provider import ISCSI
from controller.plugins.local.kvm import LOCAL_KVM
from controller.plugins.local.provider import LOCAL
from controller.plugins.nfs.kvm import NFS_KVM
from controller.plugins.nfs.provider import NFS
from controller.plugins.registry import PluginRegistry
from controller.plugins.s3.kvm import S3KvmMediator
from controller.plugins.s3.provider import S3
from controller.plugins.sftp.kvm import SftpKvmMediator
from controller.plugins.sftp.provider import SFTP

KVM = "kvm"

PRIMARY_TYPES = (LOCAL, NFS, ISCSI)
BACKUP_TYPES = (DIR, SFTP, S3)
BACKENDS = (LOCAL_KVM, NFS_KVM, ISCSI_KVM)

CELLS = (
    Cell(LOCAL, DIR, KVM, DirKvmMediator(LOCAL.driver),
         download="dir → local image cache", upload="local volume → dir"),
    Cell(LOCAL, SFTP, KVM, SftpKvmMediator(LOCAL.driver),
         download="sftp → local image cache", upload="local volume → sftp"),
    Cell(LOCAL, S3, KVM, S3KvmMediator(LOCAL.driver),
         download="s3 → local image cache", upload="local volume → s3"),
    Cell(NFS, DIR, KVM, DirKvmMediator(NFS.driver),
         download="dir → nfs image cache", upload="nfs volume → dir"),
    Cell(NFS, SFTP, KVM, SftpKvmMediator(NFS.driver),
         download="sftp → nfs image cache", upload="nfs volume → sftp"),
    Cell(NFS, S3, KVM, S3KvmMediator(NFS.driver),
         download="s3 → nfs image cache", upload="nfs volume → s3"),
    Cell(ISCSI, DIR, KVM, DirKvmMediator(ISCSI.driver),
         download="dir → iscsi image cache", upload="iscsi volume → dir"),
    Cell(ISCSI, SFTP, KVM, SftpKvmMediator(ISCSI.driver),
         download="sftp → iscsi image cache", upload="iscsi volume → sftp"),
    Cell(ISCSI, S3, KVM, S3KvmMediator(ISCSI.driver),
         download="s3 → iscsi image cache", upload="iscsi volume → s3"),
)


def default_registry() -> PluginRegistry:
    registry = PluginRegistry()
    registry.add_hypervisor(KVM)
    for primary in PRIMARY_TYPES:
        registry.add_primary_type(primary)
    for backup in BACKUP_TYPES:
        registry.add_backup_type(backup)
    for backend in BACKENDS:
        registry.add_backend(backend)
    for cell in CELLS:
        registry.add_cell(cell)
    return registry
