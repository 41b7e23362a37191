"""Maintenance of a kernel-mounted NFS storage on two hosts, against the recording agent:
what each host is told, the attachments' states, and how failures settle (the real
processes are in tests/integration/test_maintenance.py; this kernel has no NFS client)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import (
    AttachmentState,
    AttachState,
    Host,
    HostState,
    JobState,
    PrimaryStorage,
    PrimaryStorageHostRef,
    StoreState,
    VolumeAttachment,
)
from controller.services.maintenance import MaintenanceService
from controller.services.primary_storages import PrimaryStorageService
from shared.errors import AgentUnreachable, Conflict
from shared.protocol.types import Model
from tests.unit.controller.fakes import CAPACITY, RecordingAgent, host, volume
from tests.unit.controller.test_snapshot_service import deps

HOSTS = ("kvm-1", "kvm-2")


async def seed(db: async_sessionmaker[AsyncSession]) -> None:
    """A ready NFS storage in mount mode, connected on two hosts, with a stale capacity."""
    async with db.begin() as session:
        session.add_all([host(name) for name in HOSTS])
        session.add(PrimaryStorage(
            id="ps-1", name="nfs", type="nfs", hypervisor="kvm", state=StoreState.READY,
            config={"server": "nfs.example", "export": "/srv/nfs", "mode": "mount"},
            capacity_total=1 << 40, capacity_available=1 << 39))
        await session.flush()
        session.add_all([PrimaryStorageHostRef(primary_storage_id="ps-1",
                                               host_id=f"host-{name}",
                                               state=AttachState.CONNECTED)
                         for name in HOSTS])


def service(db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> MaintenanceService:
    d = deps(db, agent)
    return MaintenanceService(d, PrimaryStorageService(d))


async def states(db: async_sessionmaker[AsyncSession]) -> tuple[str, list[str]]:
    async with db() as session:
        store = await session.get(PrimaryStorage, "ps-1")
        refs = (await session.scalars(select(PrimaryStorageHostRef.state).where(
            PrimaryStorageHostRef.primary_storage_id == "ps-1")
            .order_by(PrimaryStorageHostRef.host_id))).all()
    assert store is not None
    return store.state, list(refs)


def sent(agent: RecordingAgent) -> list[tuple[str, str]]:
    return [(c.address.removeprefix("https://").split(":")[0], c.command.name)
            for c in agent.calls]


async def run(svc: MaintenanceService, job_id: str) -> Any:
    return await svc._d.jobs.get(job_id, wait=5)


async def test_maintain_unmounts_everywhere_and_cancel_mounts_again(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)
    svc = service(db, agent)
    job = await run(svc, (await svc.maintain("ps-1", 5)).id)
    assert job.state == JobState.SUCCEEDED and job.result == {"released": list(HOSTS)}
    assert sent(agent) == [(h, "nfs_unmount") for h in HOSTS]
    assert await states(db) == (StoreState.MAINTENANCE, [AttachState.MAINTENANCE] * 2)

    agent.calls.clear()
    job = await run(svc, (await svc.cancel("ps-1")).id)
    assert job.state == JobState.SUCCEEDED, job.error_message
    assert sent(agent) == [(h, c) for h in HOSTS for c in ("nfs_mount", "prepare_storage")]
    assert await states(db) == (StoreState.READY, [AttachState.CONNECTED] * 2)
    assert (job.result["capacity_total"], job.result["capacity_available"]) == (
        CAPACITY.total, CAPACITY.available), "the capacity the hosts report now"


async def test_a_host_that_cannot_unmount_leaves_the_storage_ready_and_mounted(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)

    def unmount(payload: Model) -> Any:
        if agent.calls[-1].address.startswith("https://kvm-2"):
            raise AgentUnreachable("kvm-2 does not answer")
        return agent.answers["nfs_mount"](payload)
    agent.answers["nfs_unmount"] = unmount
    svc = service(db, agent)
    job = await run(svc, (await svc.maintain("ps-1", 5)).id)
    assert job.state == JobState.FAILED and job.error_code == "agent_unreachable"
    # Both were marked released before their unmount: both are mounted again.
    assert sent(agent) == [("kvm-1", "nfs_unmount"), ("kvm-2", "nfs_unmount"),
                           ("kvm-1", "nfs_mount"), ("kvm-1", "prepare_storage"),
                           ("kvm-2", "nfs_mount"), ("kvm-2", "prepare_storage")]
    assert await states(db) == (StoreState.READY, [AttachState.CONNECTED] * 2)


async def test_a_cancel_no_host_survives_stays_in_maintenance(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)
    svc = service(db, agent)
    await run(svc, (await svc.maintain("ps-1", 5)).id)

    def down(payload: Model) -> Any:
        raise AgentUnreachable("no agent answers")
    agent.answers["nfs_mount"] = down
    job = await run(svc, (await svc.cancel("ps-1")).id)
    assert job.state == JobState.FAILED and job.error_code == "attach_failed"
    assert "kvm-1: no agent answers" in (job.error_message or "")
    assert await states(db) == (StoreState.MAINTENANCE, [AttachState.DISCONNECTED] * 2)
    # A second cancel tries the disconnected attachments again.
    agent.answers["nfs_mount"] = RecordingAgent().answers["nfs_mount"]
    job = await run(svc, (await svc.cancel("ps-1")).id)
    assert job.state == JobState.SUCCEEDED
    assert await states(db) == (StoreState.READY, [AttachState.CONNECTED] * 2)


async def test_volumes_attached_to_domains_refuse_maintenance(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)
    async with db.begin() as session:
        session.add(volume(path="/srv/nfs/volumes/vol-1.qcow2"))
        await session.flush()
        session.add(VolumeAttachment(volume_id="vol-1", host_id="host-kvm-1", domain="vm1",
                                     state=AttachmentState.ATTACHED))
    with pytest.raises(Conflict) as info:
        await service(db, agent).maintain("ps-1", 5)
    assert info.value.code == "volumes_attached"
    assert "vm1 on kvm-1 (volume root)" in info.value.message
    assert await states(db) == (StoreState.READY, [AttachState.CONNECTED] * 2)
    assert agent.calls == []


async def test_a_disconnected_host_is_told_nothing_and_its_attachment_says_so(
        db: async_sessionmaker[AsyncSession], agent: RecordingAgent) -> None:
    await seed(db)
    async with db.begin() as session:
        await session.execute(update(Host).where(Host.id == "host-kvm-2")
                              .values(state=HostState.DISCONNECTED))
    svc = service(db, agent)
    job = await run(svc, (await svc.maintain("ps-1", 5)).id)
    assert job.state == JobState.SUCCEEDED
    assert sent(agent) == [("kvm-1", "nfs_unmount")]
    async with db() as session:
        reasons = (await session.scalars(select(PrimaryStorageHostRef.reason)
                                         .order_by(PrimaryStorageHostRef.host_id))).all()
    assert reasons == ["released for the storage's maintenance",
                       "released for the storage's maintenance; host disconnected, so "
                       "nothing was released on it"]
