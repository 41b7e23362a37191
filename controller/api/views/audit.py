"""/v1/audit"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from controller.api.keys import SERVICES
from controller.api.request import paginate
from controller.api.schemas import AuditEventOut
from controller.api.views.common import ok
from controller.db.models import AuditEvent


async def list_events(request: web.Request) -> web.Response:
    """Oldest first, as every list; filter and page to the recent end."""
    async with request.app[SERVICES].db() as session:
        page = await paginate(session, request, select(AuditEvent), AuditEvent,
                              ("token_name", "method", "resource_type", "resource_id"),
                              order=(AuditEvent.at, AuditEvent.id))
    return ok(page.page([AuditEventOut.model_validate(e).model_dump(mode="json")
                         for e in page.rows]))
