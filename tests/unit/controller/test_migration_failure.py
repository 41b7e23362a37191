"""A failed live migration removes the destination's copy only once the domain is known
to write to the source: the agent may have pivoted after the controller stopped waiting
for it, and then the copy is the only current disk."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.models import (
    AttachState,
    ObjectState,
    PrimaryStorage,
    PrimaryStorageHostRef,
    Volume,
)
from controller.jobs.engine import JobContext
from controller.services.migration import MigrationService
from shared.errors import AgentUnreachable
from shared.protocol.libvirt import DomainFacts
from shared.protocol.types import Model
from tests.unit.controller.fakes import RecordingAgent, host, volume
from tests.unit.controller.test_snapshot_service import deps

SOURCE = "/srv/local/volumes/vol-1.qcow2"
COPY = "/srv/other/volumes/vol-1.qcow2"


async def failed_live_migration(db: async_sessionmaker[AsyncSession], ctx: JobContext,
                                agent: RecordingAgent) -> Volume:
    """A volume attached to vm1 whose live migration from ps-1 to ps-2 has just failed."""
    async with db.begin() as session:
        session.add_all([host()] + [PrimaryStorage(
            id=sid, name=sid, type="local", hypervisor="kvm", config={"path": path},
            capacity_total=1 << 40, capacity_allocated=1 << 30)
            for sid, path in [("ps-1", "/srv/local"), ("ps-2", "/srv/other")]])
        await session.flush()
        session.add_all([PrimaryStorageHostRef(primary_storage_id=sid, host_id="host-kvm-1",
                                               state=AttachState.CONNECTED)
                         for sid in ("ps-1", "ps-2")])
        session.add(volume(path=SOURCE, state=ObjectState.MIGRATING))
    ctx.job.resource_id = "vol-1"
    ctx.job.params = {"source": "ps-1", "dest": "ps-2", "source_path": SOURCE,
                      "held": 1 << 30, "layers": [], "live": ["host-kvm-1", "vm1"]}
    await MigrationService(deps(db, agent))._fail_migrate(ctx, "agent unreachable")
    async with db() as session:
        found = await session.get(Volume, "vol-1")
    assert found is not None
    return found


def answer(top: str | None) -> Callable[[Model], DomainFacts]:
    def domain_info(payload: Model) -> DomainFacts:
        if top is None:
            raise AgentUnreachable("kvm-1 does not answer")
        return DomainFacts(state="running", disks={"sda": "vol-1"}, tops={"vol-1": top})
    return domain_info


@pytest.mark.parametrize("top", [COPY, None], ids=["pivoted", "unknown"])
async def test_a_copy_the_domain_may_use_is_kept(
        db: async_sessionmaker[AsyncSession], ctx: JobContext, agent: RecordingAgent,
        top: str | None) -> None:
    agent.answers["domain_info"] = answer(top)
    found = await failed_live_migration(db, ctx, agent)
    assert found.state == ObjectState.ERROR and "copy on the destination is kept" in (
        found.reason or "")
    assert [c.command.name for c in agent.calls] == ["domain_info"], "nothing removed"


async def test_a_copy_the_domain_left_is_removed(
        db: async_sessionmaker[AsyncSession], ctx: JobContext, agent: RecordingAgent) -> None:
    agent.answers["domain_info"] = answer(SOURCE)
    found = await failed_live_migration(db, ctx, agent)
    assert found.state == ObjectState.READY and found.path == SOURCE
    removed = [c.payload for c in agent.calls if c.command.name == "delete_file"]
    assert [(p.dir, p.file_name) for p in removed] == [  # type: ignore[attr-defined]
        ("/srv/other/volumes", "vol-1.qcow2")]
