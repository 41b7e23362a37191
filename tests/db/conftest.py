"""The database every test here runs on: `db_url` (the top conftest's, or a module's own
with more dialects), migrated to the newest schema."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.db.engine import create_engine, migrate, sessionmaker


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(db_url)
    await migrate(engine)
    yield sessionmaker(engine)
    await engine.dispose()
