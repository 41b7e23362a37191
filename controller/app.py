"""The controller application factory."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import nullcontext

import aiohttp
from aiohttp import web

from controller.agentchannel import AgentChannel
from controller.agentclient import AgentClient
from controller.api.auth import auth_middleware
from controller.api.keys import OPENAPI, SERVICES
from controller.api.openapi import document
from controller.api.routes import add_routes
from controller.auth.agentca import AgentCa
from controller.config import ControllerConfig
from controller.db.engine import create_engine, migrate, sessionmaker
from controller.jobs.engine import JobEngine
from controller.jobs.retry import RetryPolicy
from controller.leader import Leadership, new_instance_id, replace_instance
from controller.localagent import embedded
from controller.motion.endpoints import ConnectedHostSelector
from controller.motion.install import CacheThenCloneInstall
from controller.motion.live import LiveMigration
from controller.motion.migration import SharedHostMigration, StagedMigration
from controller.motion.service import DataMotionService
from controller.motion.strategies import MediatorMotionStrategy
from controller.plugins.matrix import default_registry
from controller.plugins.registry import PluginRegistry
from controller.secrets import SecretBox
from controller.services.attachments import AttachmentService
from controller.services.audit import AuditLog
from controller.services.backup_storages import BackupStorageService
from controller.services.backups import SnapshotBackupService
from controller.services.base import ServiceDeps
from controller.services.cache_gc import CacheGcService
from controller.services.container import Services
from controller.services.enrolment import Enrolment
from controller.services.health import StorageHealth
from controller.services.hosts import HostService
from controller.services.images import ImageService
from controller.services.maintenance import MaintenanceService
from controller.services.migration import MigrationService
from controller.services.monitor import HostMonitor
from controller.services.paths import path_policy
from controller.services.primary_storages import PrimaryStorageService
from controller.services.reconcile import ReconcileService
from controller.services.snapshots import SnapshotService
from controller.services.tokens import TokenService
from controller.services.volumes import VolumeService
from shared.http import error_middleware
from shared.logs import request_id_middleware

CONFIG = web.AppKey("config", ControllerConfig)
REGISTRY = web.AppKey("registry", PluginRegistry)


def create_app(config: ControllerConfig,
               registry: PluginRegistry | None = None) -> web.Application:
    """`registry`: the plugins to run with; the ones Strata ships by default."""
    os.makedirs(config.state_dir, exist_ok=True)
    app = web.Application(middlewares=[request_id_middleware, error_middleware,
                                       auth_middleware],
                          client_max_size=1 << 20)
    app[CONFIG] = config
    app[REGISTRY] = registry or default_registry()
    app[OPENAPI] = document()
    add_routes(app)
    app.cleanup_ctx.append(_services)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    engine = create_engine(config.db_url)
    await migrate(engine)
    db = sessionmaker(engine)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        # A key is made only for a new database: on one that holds sealed credentials
        # already, every controller must be given the key they were sealed with.
        secrets = SecretBox.from_file(config.secret_key_path,
                                      create=not await AgentCa.exists(db))
        ca = await AgentCa.load_or_create(db, secrets)
        channel = AgentChannel(ca.cert_pem, ca.issue_controller_credential(config.tls_dir))
        agents = AgentClient(http, channel, config.agent_unreachable_timeout)
        owner = new_instance_id()
        predecessor = replace_instance(config.instance_path, owner)
        jobs = JobEngine(db, agents, secrets, owner=owner, lease_ttl=config.lease_ttl,
                         lease_renew=config.lease_renew_interval,
                         retry=RetryPolicy(config.step_attempts, config.step_retry_delay))
        leader = Leadership(engine, owner, config.lease_ttl, config.lease_renew_interval,
                            jobs.metrics)
        registry = app[REGISTRY]
        selector = ConnectedHostSelector(registry)
        motion = DataMotionService(registry, selector, [
            MediatorMotionStrategy(registry), SharedHostMigration(registry),
            StagedMigration(registry), LiveMigration(registry)])
        deps = ServiceDeps(db=db, jobs=jobs, registry=registry, selector=selector,
                           secrets=secrets, motion=motion, paths=path_policy(config),
                           install=CacheThenCloneInstall(motion, registry, selector))
        primary_storages = PrimaryStorageService(deps)
        backup_storages = BackupStorageService(deps)
        volumes = VolumeService(deps)
        services = Services(
            db=db, jobs=jobs, leader=leader, registry=registry,
            hosts=HostService(deps, primary_storages, backup_storages,
                              Enrolment(ca, secrets, config.join_token_ttl)),
            primary_storages=primary_storages, backup_storages=backup_storages,
            images=ImageService(deps), volumes=volumes, tokens=TokenService(db),
            snapshots=SnapshotService(deps), backups=SnapshotBackupService(deps),
            attachments=AttachmentService(deps, volumes), migration=MigrationService(deps),
            audit=AuditLog(db), reconcile=ReconcileService(deps),
            cache_gc=CacheGcService(deps),
            maintenance=MaintenanceService(deps, primary_storages),
        )
        app[SERVICES] = services
        await services.tokens.bootstrap(config.admin_token_path)
        async with embedded(config, services, agents) if config.local_agent else nullcontext():
            await services.volumes.release_orphan_caches()
            await jobs.adopt(predecessor)
            leader.periodic("host monitor", config.host_check_interval,
                            HostMonitor(db, jobs, services.hosts, agents).check_all)
            leader.periodic("reconcile", config.reconcile_interval,
                            services.reconcile.submit_all)
            leader.periodic("cache-gc", config.cache_gc_interval, services.cache_gc.submit_all)
            leader.periodic("storage-probe", config.storage_probe_interval, StorageHealth(
                db, agents, registry, config.storage_probe_timeout).probe_all)
            background = [asyncio.create_task(leader.run()),
                          asyncio.create_task(jobs.keep_leases())]
            yield
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await jobs.shutdown()
    await engine.dispose()
