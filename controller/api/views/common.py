"""Responses shared by the views, and the list and show views every resource has."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import paginate
from controller.api.schemas import JobAccepted
from controller.db.lookup import get_or_404
from controller.db.models import Base, Job
from controller.services.container import Services

M = TypeVar("M", bound=Base)
# Rows as the API shows them (reading what else they need in the same session).
Render = Callable[[Services, AsyncSession, Sequence[M]], Awaitable[Sequence[BaseModel]]]


def ok(model: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(model, BaseModel):
        return web.Response(text=model.model_dump_json(), status=status,
                            content_type="application/json")
    return web.json_response(model, status=status)


def accepted(job: Job, body: JobAccepted | None = None) -> web.Response:
    """Every mutating call answers at once with its job (in `body`, when it says more);
    the Location header points at it."""
    resp = ok(body or JobAccepted(job_id=job.id, resource_type=job.resource_type,
                                  resource_id=job.resource_id), status=202)
    resp.headers["Location"] = f"/v1/jobs/{job.id}"
    return resp


async def listing(request: web.Request, model: type[M], filters: tuple[str, ...],
                  render: Render[M]) -> web.Response:
    """A page of `model` rows, filtered by the query's `filters`."""
    services = request.app[SERVICES]
    async with services.db() as session:
        page = await paginate(session, request, select(model), model, filters)
        items = await render(services, session, page.rows)
    return ok(page.page([i.model_dump(mode="json") for i in items]))


async def showing(request: web.Request, model: type[M], what: str,
                  render: Render[M]) -> web.Response:
    """The `model` row of the path's id (a 404 naming `what` if there is none)."""
    services = request.app[SERVICES]
    async with services.db() as session:
        row = await get_or_404(session, model, request.match_info["id"], what)
        (out,) = await render(services, session, [row])
    return ok(out)
