"""/v1/tokens"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import select

from controller.api.auth import CALLER
from controller.api.keys import SERVICES
from controller.api.request import body, paginate
from controller.api.schemas import TokenCreate, TokenCreated, TokenOut
from controller.api.views.common import ok
from controller.db.models import ApiToken


async def list_tokens(request: web.Request) -> web.Response:
    async with request.app[SERVICES].db() as session:
        page = await paginate(session, request, select(ApiToken), ApiToken, ("name", "role"))
    return ok(page.page([TokenOut.model_validate(r).model_dump(mode="json")
                         for r in page.rows]))


async def create_token(request: web.Request) -> web.Response:
    req = await body(request, TokenCreate)
    row, token = await request.app[SERVICES].tokens.create(req.name, req.role)
    return ok(TokenCreated.model_validate({**TokenOut.model_validate(row).model_dump(),
                                           "token": token}), status=201)


async def revoke_token(request: web.Request) -> web.Response:
    row = await request.app[SERVICES].tokens.revoke(request.match_info["id"],
                                                    by=request[CALLER].token_id)
    return ok(TokenOut.model_validate(row))
