"""The job routes shared by both public planes: list, read, result, cancel (spec §2.4-§2.7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import Route
from .httpserver import Request, Response, json_response

if TYPE_CHECKING:
    from .app import App


def routes(app: "App") -> list[Route]:
    jobs = app.jobs

    async def list_jobs(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, {"jobs": [jobs.record(j) for j in jobs.list()]})

    async def get_job(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, jobs.record(jobs.get(params["id"])))

    async def job_result(req: Request, params: dict[str, str]) -> Response:
        status, body = jobs.result_response(jobs.get(params["id"]))
        headers = [("Retry-After", "1")] if status == 202 else []
        return json_response(status, body, headers)

    async def cancel_job(req: Request, params: dict[str, str]) -> Response:
        job = jobs.get(params["id"])
        jobs.cancel(job)
        return json_response(200, jobs.record(job))

    return [
        Route("GET", "/v1/jobs", "jobs", list_jobs),
        Route("GET", "/v1/jobs/{id}", "jobs", get_job),
        Route("GET", "/v1/jobs/{id}/result", "jobs", job_result),
        Route("DELETE", "/v1/jobs/{id}", "jobs", cancel_job),
    ]
