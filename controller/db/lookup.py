"""Loading rows by id with a 404 that names what was missing."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from controller.db.models import Base
from shared.errors import NotFound

M = TypeVar("M", bound=Base)


async def get_or_404(session: AsyncSession, model: type[M], obj_id: str, what: str) -> M:
    obj = await session.get(model, obj_id)
    if obj is None:
        raise NotFound(f"no {what} with id {obj_id}")
    return obj


async def get_fresh(session: AsyncSession, model: type[M], obj_id: str, what: str) -> M:
    """As `get_or_404`, but re-read from the database, not the session's identity map."""
    obj = await session.get(model, obj_id, populate_existing=True)
    if obj is None:
        raise NotFound(f"no {what} with id {obj_id}")
    return obj
