"""Every service, as the API and the embedded defaults find them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.jobs.engine import JobEngine
from controller.leader import Leadership
from controller.plugins.registry import PluginRegistry
from controller.services.attachments import AttachmentService
from controller.services.audit import AuditLog
from controller.services.backup_storages import BackupStorageService
from controller.services.backups import SnapshotBackupService
from controller.services.cache_gc import CacheGcService
from controller.services.hosts import HostService
from controller.services.images import ImageService
from controller.services.maintenance import MaintenanceService
from controller.services.migration import MigrationService
from controller.services.primary_storages import PrimaryStorageService
from controller.services.reconcile import ReconcileService
from controller.services.snapshots import SnapshotService
from controller.services.tokens import TokenService
from controller.services.volumes import VolumeService


@dataclass
class Services:
    db: async_sessionmaker[AsyncSession]
    jobs: JobEngine
    leader: Leadership
    registry: PluginRegistry
    hosts: HostService
    primary_storages: PrimaryStorageService
    backup_storages: BackupStorageService
    images: ImageService
    volumes: VolumeService
    tokens: TokenService
    snapshots: SnapshotService
    backups: SnapshotBackupService
    attachments: AttachmentService
    migration: MigrationService
    audit: AuditLog
    reconcile: ReconcileService
    cache_gc: CacheGcService
    maintenance: MaintenanceService
