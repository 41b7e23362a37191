"""Keyset pages (`?after=`) on SQLite and PostgreSQL: every row that was there when the
walk began is seen once, in order, whatever is inserted between two pages."""

from __future__ import annotations

import time

import pytest
from aiohttp.test_utils import make_mocked_request
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from controller.api.request import PageResult, paginate
from controller.db.models import ObjectState, PrimaryStorage, StoreState, Volume
from shared.errors import InvalidInput

FILTERS = ("state", "primary_storage_id")


async def _insert(db: async_sessionmaker[AsyncSession], store: str,
                  created: list[float]) -> list[str]:
    async with db.begin() as session:
        rows = [Volume(name=f"v{i}", primary_storage_id=store, size=1, created_at=at,
                       state=ObjectState.READY) for i, at in enumerate(created)]
        session.add_all(rows)
    return [r.id for r in rows]


async def _paginate(db: async_sessionmaker[AsyncSession], query: str) -> PageResult:
    async with db() as session:
        return await paginate(session, make_mocked_request("GET", f"/v1/volumes?{query}"),
                              select(Volume), Volume, FILTERS)


async def _page(db: async_sessionmaker[AsyncSession], query: str) -> tuple[list[Volume],
                                                                           str | None]:
    page = await _paginate(db, query)
    return page.rows, page.next


async def test_keyset_walk_is_stable_under_inserts(
        db: async_sessionmaker[AsyncSession]) -> None:
    async with db.begin() as session:
        stores = [PrimaryStorage(name=n, type="local", config={"path": f"/{n}"},
                                 capacity_total=1, state=StoreState.READY) for n in "ab"]
        session.add_all(stores)
    a, b = (s.id for s in stores)
    now = time.time()
    # Ties on created_at are ordered by id: four rows share one instant.
    before = await _insert(db, a, [now - 10, now - 9, *[now - 8] * 4, now - 7, now - 6])
    await _insert(db, b, [now - 8, now - 5])
    seen: list[Volume] = []
    query = f"primary_storage_id={a}&limit=3"
    cursor: str | None = None
    while True:
        rows, cursor = await _page(db, query + (f"&after={cursor}" if cursor else ""))
        seen += rows
        # Inserted between two pages: later rows, and one at an instant already passed.
        await _insert(db, a, [time.time() + 100, now - 9])
        await _insert(db, b, [time.time() + 100])
        if cursor is None:
            break
        assert len(seen) < 100, "the walk never ends"
    ids = [v.id for v in seen]
    assert len(ids) == len(set(ids)), "a row was shown twice"
    assert set(before) <= set(ids), "a row that was there all along was skipped"
    assert {v.primary_storage_id for v in seen} == {a}
    keys = [(v.created_at, v.id) for v in seen]
    assert keys == sorted(keys)


async def test_bad_cursors_are_refused(db: async_sessionmaker[AsyncSession]) -> None:
    rows, cursor = await _page(db, "limit=1")
    assert rows == [] and cursor is None
    for query in ("after=not-a-cursor", "after=WzFd", "after=W1sxXSwgMV0=",
                  "after=WzEsICJ4Il0=&offset=1"):
        with pytest.raises(InvalidInput):
            await _page(db, query)


async def test_total_is_counted_on_request_only(
        db: async_sessionmaker[AsyncSession]) -> None:
    """Counting costs every matching row: no page has it unless asked."""
    async with db.begin() as session:
        store = PrimaryStorage(name="c", type="local", config={"path": "/c"},
                               capacity_total=1, state=StoreState.READY)
        session.add(store)
    await _insert(db, store.id, [time.time() + i for i in range(5)])
    first = await _paginate(db, "limit=2")
    assert first.total is None and first.next is not None
    assert (await _paginate(db, "limit=2&count=true")).total == 5
    assert (await _paginate(db, f"limit=2&after={first.next}")).total is None
    assert (await _paginate(db, f"limit=2&after={first.next}&count=true")).total == 5
    assert (await _paginate(db, "limit=2&offset=2")).total is None
    assert (await _paginate(db, "limit=2&offset=2&count=true")).total == 5
    assert (await _paginate(db, "limit=2&count=false")).total is None
    with pytest.raises(InvalidInput):
        await _paginate(db, "count=maybe")
