"""/v1/jobs"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from controller.api.keys import SERVICES
from controller.api.request import number_param
from controller.api.schemas import Error, JobOut
from controller.api.views.common import listing, ok
from controller.db.models import Job, JobState
from controller.services.container import Services

MAX_WAIT = 60.0


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id, kind=job.kind, state=job.state, progress=job.progress, message=job.message,
        resource_type=job.resource_type, resource_id=job.resource_id, result=job.result,
        error=Error(code=job.error_code, message=job.error_message or "")
        if job.error_code else None, request_id=job.request_id,
        owner=job.owner if job.state == JobState.RUNNING else None,
        attempts=job.attempts or {}, created_at=job.created_at, updated_at=job.updated_at,
    )


async def _jobs_out(_: Services, __: AsyncSession, jobs: Sequence[Job]) -> list[JobOut]:
    return [job_out(j) for j in jobs]


async def list_jobs(request: web.Request) -> web.Response:
    return await listing(request, Job, ("kind", "state", "resource_type", "resource_id"),
                         _jobs_out)


async def get_job(request: web.Request) -> web.Response:
    """`?wait=N` long-polls up to N seconds for the job to finish."""
    wait = number_param(request, "wait", 0.0, 0.0, MAX_WAIT)
    job = await request.app[SERVICES].jobs.get(request.match_info["id"], wait)
    return ok(job_out(job))


async def cancel_job(request: web.Request) -> web.Response:
    """Answers at once: the job is still running until its owner has stopped it."""
    job = await request.app[SERVICES].jobs.cancel(request.match_info["id"])
    return ok(job_out(job), status=202)
