"""aiohttp pieces both servers use: JSON error bodies for every failure, from a bug in a
handler down to a request line the HTTP parser refuses."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from pydantic import BaseModel, ValidationError

from shared.errors import InvalidInput, StrataError

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Request bodies are small documents: nothing Strata takes nests deeper than this.
MAX_JSON_DEPTH = 32


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message}, status=status)


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as `{code, message}`; a bug is a 500 with no traceback in it."""
    try:
        return await handler(request)
    except Exception as exc:
        return error_to_response(request, exc)


def error_to_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    if isinstance(exc, StrataError):
        return error_response(exc.status, exc.code, exc.message)
    if isinstance(exc, ValidationError):
        return error_response(400, "invalid_input", validation_message(exc))
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the server log")


async def read_json(request: web.Request) -> object:
    too_deep = InvalidInput(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise too_deep from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise too_deep
    return data


def _depth_exceeds(data: object, limit: int) -> bool:
    """Walks without recursion, so the check itself can't overflow the stack."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children: list[Any] = (list(value.values()) if isinstance(value, dict)
                               else value if isinstance(value, list) else [])
        if children and depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_model(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json"
    )


class _JsonErrorRequestHandler(RequestHandler):
    """Answers what fails before routing (a request line over the parser's limit, a
    malformed header) with the same `{code, message}` body as every other error."""

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs, checks nothing was sent
        code = "internal_error" if status >= 500 else "bad_request"
        text = ("internal error; see the server log" if status >= 500
                else f"the HTTP request could not be parsed ({type(exc).__name__})")
        resp = error_response(status, code, text)
        resp.force_close()
        return resp


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    """An `AppRunner` whose connections answer protocol errors in JSON too."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _JsonErrorServer(server.request_handler, request_factory=server.request_factory,
                                handler_cancellation=server.handler_cancellation,
                                loop=server._loop, **server._kwargs)
