"""/healthz, /v1/capabilities, /v1/openapi.json"""

from __future__ import annotations

from aiohttp import web

from controller.api.keys import OPENAPI, SERVICES
from controller.api.schemas import Capabilities
from controller.api.views.common import ok


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def capabilities(request: web.Request) -> web.Response:
    return ok(Capabilities.model_validate(request.app[SERVICES].registry.capabilities()))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])
