"""Reading requests: validated bodies, pagination and filters."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import Select, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import InvalidInput
from shared.http import read_json

B = TypeVar("B", bound=BaseModel)

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


async def body(request: web.Request, model: type[B]) -> B:
    """The request body as `model`; a ValidationError becomes a 400 in the middleware."""
    return model.model_validate(await read_json(request))


N = TypeVar("N", int, float)


def number_param(request: web.Request, name: str, default: N, lo: N, hi: N) -> N:
    """A numeric query parameter of the type of `default`, within [lo, hi]."""
    raw = request.query.get(name)
    if raw is None:
        return default
    kind = type(default)
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                           f"not {raw!r}") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo:g} and {hi:g}")
    return value


def flag_param(request: web.Request, name: str) -> bool:
    """A yes/no query parameter: `true`/`false` (or `1`/`0`); absent is false."""
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{name} must be true or false, not {raw!r}")
    return raw in ("true", "1")


@dataclass
class PageResult:
    rows: list[Any]
    # The number of matching rows; None unless asked for (`?count=true`).
    total: int | None
    limit: int
    offset: int
    # The cursor of the next page (`?after=`), when this one was full.
    next: str | None = None

    def page(self, items: list[Any]) -> dict[str, Any]:
        return {"items": items, "total": self.total, "limit": self.limit, "offset": self.offset,
                "next": self.next}


def _cursor(row: Any, order: tuple[Any, ...]) -> str:
    values = [getattr(row, column.key) for column in order]
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def _after(raw: str, order: tuple[Any, ...]) -> Any:
    """The condition "after the row this cursor names", in `order`: a row-value
    comparison, `(a, b) > (x, y)`, which both databases serve as a range of an index on
    the order's columns (spelt out with OR, SQLite scans every row before the cursor)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, binascii.Error):
        values = None
    if not isinstance(values, list) or len(values) != len(order) \
            or not all(isinstance(v, str | int | float) for v in values):
        raise InvalidInput("after must be the next cursor of a previous page")
    return tuple_(*order) > tuple_(*(literal(v, column.type)
                                     for v, column in zip(values, order, strict=True)))


async def paginate(session: AsyncSession, request: web.Request, stmt: Select[Any],
                   model: Any, filters: tuple[str, ...],
                   order: tuple[Any, ...] | None = None) -> PageResult:
    """Applies `?name=value` equality filters (only the listed ones) and a page of `limit`
    rows in `order` (creation by default; its last column must be unique): after the
    row of the cursor `after` (keyset paging: deep pages cost what the first does, and
    rows inserted meanwhile neither repeat nor hide others), or at `offset`. `total`
    costs every matching row, so a page costs what its rows do whatever the table
    holds unless the client asks for it (`?count=true`). Unknown query parameters are
    refused rather than silently ignored."""
    allowed = {*filters, "limit", "offset", "after", "count"}
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        raise InvalidInput(f"unknown query parameter(s) {', '.join(unknown)}; "
                           f"filters here: {', '.join(filters)}")
    for name in filters:
        if name in request.query:
            stmt = stmt.where(getattr(model, name) == request.query[name])
    order = order or (model.created_at, model.id)
    limit = number_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = number_param(request, "offset", 0, 0, 1 << 31)
    after = request.query.get("after")
    counted = flag_param(request, "count")
    total = (await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
             if counted else None)
    if after is not None:
        if offset:
            raise InvalidInput("give after or offset, not both")
        stmt = stmt.where(_after(after, order))
    rows = list((await session.scalars(
        stmt.order_by(*order).limit(limit).offset(offset))).all())
    return PageResult(rows, total, limit, offset,
                      _cursor(rows[-1], order) if len(rows) == limit else None)
