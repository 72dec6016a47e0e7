"""The job routes shared by both public planes: list, read, result, cancel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .api import Route
from .httpserver import Request, Response, json_response

if TYPE_CHECKING:
    from .app import App

LIST_LIMIT = 50


def routes(app: "App") -> list[Route]:
    ttl = app.cfg.jobs.result_ttl_seconds

    async def list_jobs(req: Request, params: dict[str, str]) -> Response:
        jobs = sorted(app.jobs.jobs.values(), key=lambda j: j.created_at, reverse=True)[:LIST_LIMIT]
        return json_response(200, {"jobs": [j.record(ttl) for j in jobs]})

    async def get_job(req: Request, params: dict[str, str]) -> Response:
        return json_response(200, app.jobs.get(params["id"]).record(ttl))

    async def job_result(req: Request, params: dict[str, str]) -> Response:
        status, body = app.jobs.result_response(app.jobs.get(params["id"]))
        return json_response(status, body)

    async def cancel_job(req: Request, params: dict[str, str]) -> Response:
        job = app.jobs.get(params["id"])
        app.jobs.cancel(job)
        return json_response(200, job.record(ttl))

    return [
        Route("GET", "/v1/jobs", "jobs", list_jobs),
        Route("GET", "/v1/jobs/{id}", "jobs", get_job),
        Route("GET", "/v1/jobs/{id}/result", "jobs", job_result),
        Route("DELETE", "/v1/jobs/{id}", "jobs", cancel_job),
    ]
