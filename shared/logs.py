"""Structured logs: one JSON object per line, carrying the request id of the API call a
line serves, so one request can be followed from the API through its job to the agent
tasks it caused. The id travels in the `X-Request-Id` header and in the job's row."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from aiohttp import web

from shared.http import Handler

HEADER = "X-Request-Id"
REQUEST_ID: ContextVar[str | None] = ContextVar("strata_request_id", default=None)
# A caller's own id is kept when it is short and plain, so it can't forge log structure.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{1,64}")
FORMATS = ("json", "text")


def accept_request_id(given: str | None) -> str:
    """The caller's id when acceptable, else a new one."""
    if given is not None and _ACCEPTED.fullmatch(given):
        return given
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request,
                                handler: Handler) -> web.StreamResponse:
    """Binds the request's id for everything it runs (tasks it starts inherit it) and
    answers with it."""
    rid = accept_request_id(request.headers.get(HEADER))
    token = REQUEST_ID.set(rid)
    try:
        response = await handler(request)
    finally:
        REQUEST_ID.reset(token)
    if not response.prepared:
        response.headers[HEADER] = rid
    return response


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        rid = REQUEST_ID.get()
        if rid is not None:
            doc["request_id"] = rid
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: str, fmt: str) -> None:
    """`json` (the default of both daemons) or `text`, for a person at a terminal."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
