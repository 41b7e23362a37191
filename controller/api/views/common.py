"""Responses shared by the views."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from controller.api.schemas import JobAccepted
from controller.db.models import Job


def ok(model: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(model, BaseModel):
        return web.Response(text=model.model_dump_json(), status=status,
                            content_type="application/json")
    return web.json_response(model, status=status)


def accepted(job: Job) -> web.Response:
    """Every mutating call answers at once with its job; the Location header points at it."""
    resp = ok(JobAccepted(job_id=job.id, resource_type=job.resource_type,
                          resource_id=job.resource_id), status=202)
    resp.headers["Location"] = f"/v1/jobs/{job.id}"
    return resp
