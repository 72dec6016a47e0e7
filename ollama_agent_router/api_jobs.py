"""The job routes shared by both public planes: list, read, result, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import Route
from .errors import HttpError
from .httpserver import Request, Response, json_response

if TYPE_CHECKING:
    from .app import App

LIST_LIMIT = 50


def routes(app: "App") -> list[Route]:
    ttl = app.cfg.jobs.result_ttl_seconds

    def visible_job(req: Request, job_id: str):
        # Another principal's job is indistinguishable from a missing one.
        job = app.jobs.get(job_id)
        if not req.context["principal"].can_see(job.owner):
            raise HttpError(404, "Job not found", code="job_not_found")
        return job

    async def list_jobs(req: Request, params: dict[str, str]) -> Response:
        principal = req.context["principal"]
        mine = (j for j in app.jobs.jobs.values() if principal.can_see(j.owner))
        jobs = sorted(mine, key=lambda j: j.created_at, reverse=True)[:LIST_LIMIT]
        return json_response(200, {"jobs": [j.record(ttl) for j in jobs]})

    async def get_job(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, visible_job(req, params["id"]).record(ttl))

    async def job_result(req: Request, params: dict[str, str]) -> Response:
        status, body = app.jobs.result_response(visible_job(req, params["id"]))
        return json_response(status, body)

    async def cancel_job(req: Request, params: dict[str, str]) -> Response:
        job = visible_job(req, params["id"])
        app.jobs.cancel(job)
        return json_response(200, job.record(ttl))

    return [
        Route("GET", "/v1/jobs", "jobs", list_jobs),
        Route("GET", "/v1/jobs/{id}", "jobs", get_job),
        Route("GET", "/v1/jobs/{id}/result", "jobs", job_result),
        Route("DELETE", "/v1/jobs/{id}", "jobs", cancel_job),
    ]
