"""Fixtures of the controller's unit tests: a recording agent, an in-memory database, a
job context joining them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.engine import create_engine, migrate, sessionmaker
from controller.jobs.engine import JobContext
from tests.unit.controller.fakes import RecordingAgent, job_context


@pytest.fixture
def agent() -> RecordingAgent:
    return RecordingAgent()


@pytest.fixture
async def db() -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine("sqlite:///:memory:")
    await migrate(engine)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def ctx(agent: RecordingAgent, db: async_sessionmaker[AsyncSession]) -> JobContext:
    return job_context(agent, db)
