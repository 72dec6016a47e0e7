"""The job routes shared by both public planes: list, read, result, cancel (spec §2.4-§2.7).

Unlike the original, the list holds summaries (no request or result bodies) and is paged: ``limit`` (1 to
200, default 50) and ``after`` (the ``next`` of the previous page). Bodies come one job at a time.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from ..errors import HttpError
from ..http.messages import Request, Response, json_response
from ..jobs import LIST_LIMIT, MAX_LIST_LIMIT, JobManager
from .table import Route


def page_params(query: str) -> tuple[int, str | None]:
    """``limit`` and ``after`` from a query string; 400 for a limit that is not 1 to MAX_LIST_LIMIT."""
    params = parse_qs(query)
    limit_text = params.get("limit", [str(LIST_LIMIT)])[-1]
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIST_LIMIT:
        raise HttpError(400, f"limit must be an integer from 1 to {MAX_LIST_LIMIT}", code="invalid_query")
    after = params.get("after", [None])[-1]
    return int(limit_text), after


def routes(jobs: JobManager) -> list[Route]:
    def visible_job(req: Request, job_id: str):
        # Another principal's job is indistinguishable from a missing one.
        job = jobs.get(job_id)
        if not req.principal.can_see(job.owner):
            raise HttpError(404, "Job not found", code="job_not_found")
        return job

    async def list_jobs(req: Request, params: dict[str, str]) -> Response:
        principal = req.principal
        limit, after = page_params(req.query)
        mine, following = jobs.page(limit, after, lambda j: principal.can_see(j.owner))
        body: dict = {"jobs": [j.summary(jobs.ttl) for j in mine]}
        if following is not None:
            body["next"] = following
        return json_response(200, body)

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
