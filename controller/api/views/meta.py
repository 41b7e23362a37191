"""/healthz, /v1/capabilities, /v1/openapi.json, /metrics"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from controller.api.keys import OPENAPI, SERVICES
from controller.api.schemas import Capabilities
from controller.api.views.common import ok


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def capabilities(request: web.Request) -> web.Response:
    return ok(Capabilities.model_validate(request.app[SERVICES].registry.capabilities()))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    async with services.db() as session:
        body = await services.jobs.metrics.render(session)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
