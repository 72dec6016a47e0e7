"""Async jobs: records in the original's snake_case shape, queued on the scheduler without a task each.

A queued job is only a scheduler ticket with a callback; a task exists only while the job runs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import HttpError
from .jsonutil import dumps, iso_ms
from .scheduler import Slot, Ticket
from .service import forward_body, json_or_raw, upstream_http_error

if TYPE_CHECKING:
    from .app import App

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")
FINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})


def new_job_id(node_id: str) -> str:
    return f"job_{node_id}_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


@dataclass(eq=False)
class Job:
    id: str
    status: str
    task_type: str
    selected_model: str
    request: dict  # the body sent upstream, minus `model`
    priority: int
    created_at: float
    owner: str | None = None
    result_json: str | None = None
    error_json: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    ticket: Ticket | None = field(default=None, repr=False)
    task: asyncio.Task | None = field(default=None, repr=False)

    def record(self, ttl_seconds: int) -> dict:
        """The original's JobRecord (§7.1). ``expires_at`` counts from completion (null while unfinished)."""
        return {
            "id": self.id,
            "status": self.status,
            "task_type": self.task_type,
            "selected_model": self.selected_model,
            "request_json": dumps(self.request).decode("utf-8"),
            "result_json": self.result_json,
            "error_json": self.error_json,
            "attempts": self.attempts,
            "priority": self.priority,
            "created_at": iso_ms(self.created_at),
            "started_at": iso_ms(self.started_at) if self.started_at else None,
            "finished_at": iso_ms(self.finished_at) if self.finished_at else None,
            "expires_at": iso_ms(self.finished_at + ttl_seconds) if self.finished_at else None,
        }


class JobManager:
    def __init__(self, app: "App") -> None:
        self.app = app
        self.cfg = app.cfg
        self.jobs: dict[str, Job] = {}

    def summary(self) -> dict:
        counts = dict.fromkeys(STATUSES, 0)
        for job in self.jobs.values():
            counts[job.status] += 1
        return {
            "queued": counts["queued"],
            "running": counts["running"],
            "succeededRetained": counts["succeeded"],
            "failedRetained": counts["failed"],
            "cancelledRetained": counts["cancelled"],
            "expiredRetained": counts["expired"],
        }

    def submit(self, request: dict, model: str, task_type: str, priority: str, owner: str | None) -> tuple[Job, int]:
        """Create and queue a job; returns it with its position (waiting ahead on that model + 1)."""
        scheduler = self.app.scheduler
        position = scheduler.counts(model)[0] + 1
        job = Job(
            id=new_job_id(self.cfg.server.node_id),
            status="queued",
            task_type=task_type,
            selected_model=model,
            request={k: v for k, v in request.items() if k != "model"},
            priority=scheduler.priority_weight(priority),
            created_at=time.time(),
            owner=owner,
        )
        job.ticket = scheduler.enqueue(model, priority, owner, on_start=lambda slot: self._start(job, slot))
        self.jobs[job.id] = job
        return job, position

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise HttpError(404, "Job not found", code="job_not_found")
        return job

    def cancel(self, job: Job) -> None:
        if job.status == "queued" and job.ticket is not None:
            self.app.scheduler.cancel(job.ticket)
        elif job.status == "running" and job.task is not None:
            job.task.cancel()  # aborts the upstream call; the slot is released in _run's finally
        else:
            return
        job.status = "cancelled"
        job.finished_at = time.time()

    def _start(self, job: Job, slot: Slot) -> None:
        job.ticket = None
        job.status = "running"
        job.attempts += 1
        job.started_at = job.started_at or time.time()
        job.task = asyncio.get_running_loop().create_task(self._run(job, slot))

    async def _run(self, job: Job, slot: Slot) -> None:
        app = self.app
        spec = app.table.models[job.selected_model]
        try:
            resp = await app.client.request(
                "POST", self.cfg.ollama.open_ai_compatible_path,
                forward_body(dict(job.request, stream=False), job.selected_model), timeout=spec.timeout_ms / 1000,
            )
            try:
                data = await resp.read()
            finally:
                resp.close()
            if resp.status >= 400:
                raise upstream_http_error(resp.status, json_or_raw(data))
            self._finish(job, "succeeded", result=data.decode("utf-8", "replace"))
        except asyncio.CancelledError:
            pass
        except HttpError as e:
            self._finish(job, "failed", error={"message": e.message, "name": "UpstreamHttpError"})
        except Exception as e:
            message = getattr(e, "message", None) or str(e) or type(e).__name__
            self._finish(job, "failed", error={"message": message, "name": type(e).__name__})
        finally:
            slot.release()
            job.task = None

    def _finish(self, job: Job, status: str, *, result: str | None = None, error: dict | None = None) -> None:
        if job.status not in ("queued", "running"):
            return
        job.status = status
        job.finished_at = time.time()
        job.result_json = result
        job.error_json = dumps(error).decode("utf-8") if error else None

    def result_response(self, job: Job) -> tuple[int, Any]:
        if job.status == "succeeded":
            return 200, json.loads(job.result_json or "{}")
        if job.status == "failed":
            return 500, {"status": "failed", "error": json.loads(job.error_json or "{}")}
        if job.status in ("cancelled", "expired"):
            return 410, {"status": job.status, "error": {"message": f"Job {job.status}", "type": "invalid_request_error",
                                                         "code": f"job_{job.status}"}}
        return 202, {"status": job.status}
