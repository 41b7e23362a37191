"""Request handlers of the agent API."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.commands import HANDLERS
from agent.commands.host import network_facts
from agent.files.probe import probe
from agent.keys import CONFIG, MAIN, SERVICES, TASKS, TLS
from shared.errors import InvalidInput, NotFound
from shared.http import json_model, read_json
from shared.protocol.enrol import CertRequest, CsrRequest
from shared.protocol.envelope import CommandEnvelope, TaskInfo
from shared.protocol.host import NetworkQuery, ProbeRequest, ProbeResults
from shared.protocol.types import Model

MAX_WAIT = 60.0


async def healthz(request: web.Request) -> web.Response:
    tasks = request.app[TASKS]
    return web.json_response({"status": "shutting_down" if tasks.closing else "ok",
                              "running_tasks": len(tasks.running()),
                              "instance": tasks.instance})


def _wait_param(request: web.Request) -> float:
    raw = request.query.get("wait", "0")
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidInput(f"wait must be a number of seconds, not {raw!r}") from None
    if not 0 <= wait <= MAX_WAIT:
        raise InvalidInput(f"wait must be between 0 and {MAX_WAIT:g} seconds")
    return wait


def _task_response(info: TaskInfo) -> web.Response:
    return json_model(info, status=200 if info.state.finished else 202)


async def submit_command(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    handler = HANDLERS.get(name)
    if handler is None:
        raise NotFound(f"unknown command {name!r}", code="unknown_command")
    envelope = CommandEnvelope.model_validate(await read_json(request))
    payload = handler.command.payload.model_validate(envelope.payload)
    services = request.app[SERVICES]

    async def body(progress: Any) -> dict[str, Any]:
        result: Model = await handler.run(services, payload, progress)
        return result.model_dump(mode="json")

    tasks = request.app[TASKS]
    info = tasks.submit(envelope.task_id, name, envelope.deadline, body)
    if not info.state.finished:
        info = await tasks.wait(envelope.task_id, request.app[CONFIG].command_wait)
    return _task_response(info)


async def get_task(request: web.Request) -> web.Response:
    tasks = request.app[TASKS]
    info = await tasks.wait(request.match_info["task_id"], _wait_param(request))
    return _task_response(info)


async def cancel_task(request: web.Request) -> web.Response:
    tasks = request.app[TASKS]
    info = tasks.cancel(request.match_info["task_id"])
    info = await tasks.wait(info.task_id, 5)
    return _task_response(info)


async def debug_tasks(request: web.Request) -> web.Response:
    tasks = request.app[MAIN][TASKS]
    return web.json_response({
        "running": [t.model_dump(mode="json") for t in tasks.running()],
        "recent": [t.model_dump(mode="json") for t in tasks.recent()],
        "now": time.time(),
    })


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[MAIN][TASKS].metrics.registry
    return web.Response(body=generate_latest(registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def debug_config(request: web.Request) -> web.Response:
    config = request.app[MAIN][CONFIG]
    data = config.model_dump()
    data["enrolled"] = request.app[MAIN][TLS].enrolled
    return web.json_response(data)


async def debug_network(request: web.Request) -> web.Response:
    """Interfaces and routes to the storage servers (`?server=` adds one): served to
    the controller over mutual TLS, and to the host's operator on the loopback port."""
    main = request.app.get(MAIN, request.app)
    query = NetworkQuery(servers=request.query.getall("server", []))
    return json_model(await network_facts(main[SERVICES], query.servers))


async def probe_storages(request: web.Request) -> web.Response:
    """The controller's storage health probe: each root at once, each bounded by the
    request's timeout (a question, not a task: nothing is kept of it)."""
    req = ProbeRequest.model_validate(await read_json(request))
    files = request.app[SERVICES].files
    return json_model(ProbeResults(results=list(await asyncio.gather(
        *(probe(files, path, req.timeout) for path in req.paths)))))


async def enrol_csr(request: web.Request) -> web.Response:
    req = CsrRequest.model_validate(await read_json(request))
    return json_model(request.app[TLS].begin(req))


async def enrol_cert(request: web.Request) -> web.Response:
    req = CertRequest.model_validate(await read_json(request))
    return json_model(request.app[TLS].complete(req))
