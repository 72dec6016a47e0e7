"""The job routes shared by both public planes: list, read, result, cancel (spec §2.4-§2.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import HttpError
from ..http.messages import Request, Response, json_response
from .table import Route

if TYPE_CHECKING:
    from ..app import App


def routes(app: "App") -> list[Route]:
    jobs = app.jobs

    def visible_job(req: Request, job_id: str):
        # Another principal's job is indistinguishable from a missing one.
        job = jobs.get(job_id)
        if not req.principal.can_see(job.owner):
            raise HttpError(404, "Job not found", code="job_not_found")
        return job

    async def list_jobs(req: Request, params: dict[str, str]) -> Response:
        principal = req.principal
        mine = jobs.list(visible=lambda j: principal.can_see(j.owner))
        return json_response(200, {"jobs": [jobs.record(j) for j in mine]})

    async def get_job(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, jobs.record(visible_job(req, params["id"])))

    async def job_result(req: Request, params: dict[str, str]) -> Response:
        status, body = jobs.result_response(visible_job(req, params["id"]))
        headers = [("Retry-After", "1")] if status == 202 else []
        return json_response(status, body, headers)

    async def cancel_job(req: Request, params: dict[str, str]) -> Response:
        job = visible_job(req, params["id"])
        jobs.cancel(job)
        return json_response(200, jobs.record(job))

    return [
        Route("GET", "/v1/jobs", "jobs", list_jobs),
        Route("GET", "/v1/jobs/{id}", "jobs", get_job),
        Route("GET", "/v1/jobs/{id}/result", "jobs", job_result),
        Route("DELETE", "/v1/jobs/{id}", "jobs", cancel_job),
    ]
