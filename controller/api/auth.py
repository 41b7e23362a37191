"""Authentication on every route but /healthz (401), the route's role (403), and an
audit record of every mutating call, whatever its outcome."""

from __future__ import annotations

import json

from aiohttp import web

from controller.api.keys import SERVICES
from controller.auth.tokens import Caller, Role
from shared.errors import Forbidden, Unauthorized
from shared.http import Handler, error_to_response

OPEN_PATHS = frozenset({"/healthz"})
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CALLER = web.RequestKey("caller", Caller)


def requires(role: Role, handler: Handler) -> Handler:
    """`handler`, for callers whose role is `role` or above."""

    async def checked(request: web.Request) -> web.StreamResponse:
        caller = request[CALLER]
        if not caller.role.allows(role):
            raise Forbidden(f"token {caller.name!r} is {caller.role}; this needs {role}")
        return await handler(request)

    return checked


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    caller = (await request.app[SERVICES].tokens.caller(token.strip())
              if scheme.lower() == "bearer" else None)
    if caller is None:
        raise Unauthorized("a valid API token is needed: Authorization: Bearer <token>")
    request[CALLER] = caller
    if request.method not in MUTATING:
        return await handler(request)
    try:
        response = await handler(request)
    except Exception as exc:
        response = error_to_response(request, exc)
    await _audit(request, caller, response)
    return response


async def _audit(request: web.Request, caller: Caller, response: web.StreamResponse) -> None:
    """The resource is the route's `{id}`, or the one a 202 names."""
    resource = request.match_info.route.resource
    data: dict[str, str | None] = {}
    if isinstance(response, web.Response) and isinstance(response.body, bytes) \
            and response.content_type == "application/json":
        parsed = json.loads(response.body)
        data = parsed if isinstance(parsed, dict) else {}
    await request.app[SERVICES].audit.record(
        token_id=caller.token_id, token_name=caller.name, method=request.method,
        route=resource.canonical if resource else request.path[:255],
        resource_type=data.get("resource_type"),
        resource_id=data.get("resource_id") or request.match_info.get("id"),
        status=response.status, code=data.get("code"))
