"""Async jobs: accepted, queued on the scheduler without a task each, run, retried, kept until their TTL.

States (spec §7.2, with the original's gaps closed):

- queued -> running -> succeeded | failed. A retryable failure (connection cut, 5xx, 503) goes back to
  queued after a backoff, on the next candidate model, while ``jobs.maxAttempts`` allows.
- queued | running -> cancelled. A queued job leaves the scheduler; a running one has its upstream
  request aborted, which frees its slot.
- queued -> expired when it has not started ``resultTtlSeconds`` after creation: it never runs.
- succeeded | failed | cancelled -> expired ``resultTtlSeconds`` after completion; the result is dropped.

At most ``jobs.maxRetainedJobs`` finished jobs are kept, and at most ``jobs.maxRetainedBytes`` of bodies
(requests, results, errors): expired ones are evicted first, then the oldest finished. Queued and running
jobs are never evicted, so a submission that does not fit beside them (or beside the caller's own within
``jobs.maxRetainedBytesPerOwner``) is refused with 429. An expired job keeps no body at all.
A queued job is a scheduler ticket with a callback: no task exists until it runs, so deep queues are cheap.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import secrets
import time
from collections import deque
from typing import Any, Callable, Iterable, Sequence

from .config.schema import Config
from .errors import HttpError, error_payload
from .events import EventHub, JobEvent
from .jobstore import ACTIVE, FINISHED, STATUSES, ByteBudget, Job, StoreError, open_store
from .jsonutil import JsonObject, dumps, parse_json_sliced
from .log import Logger
from .metrics import Metrics
from .runner import Call, Runner, forward_body
from .scheduler import Scheduler, Slot, priority_name
from .upstream import json_or_raw

__all__ = ["Job", "JobManager", "new_job_id"]

RETRYABLE_STATUSES = frozenset({502, 503})  # what Service maps connection cuts, 5xx and a full Ollama queue to
MAX_BACKOFF_S = 60.0
LIST_LIMIT = 50  # a page of GET /v1/jobs, unless the caller asks for fewer
MAX_LIST_LIMIT = 200
_TRUSTED = 1 << 62  # bounds for parsing a stored request: it was within the real ones when it was accepted


def new_job_id(node_id: str) -> str:
    """``job_<node>_`` and 16 characters of [A-Za-z0-9_-], as the original's nanoid: 96 random bits."""
    return f"job_{node_id}_" + base64.urlsafe_b64encode(secrets.token_bytes(12)).decode("ascii")


def error_json(status: int, message: str, code: str, extra: dict | None = None) -> str:
    """A failure as stored in ``error_json``: the OpenAI error object, never a stack trace."""
    return dumps(error_payload(status, message, code, extra)["error"]).decode("utf-8")


class JobManager:
    def __init__(self, cfg: Config, scheduler: Scheduler, runner: Runner, metrics: Metrics, log: Logger,
                 events: EventHub, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.events = events
        self.scheduler = scheduler
        self.runner = runner
        self.metrics = metrics
        self.log = log
        self.clock = clock
        self.models = frozenset(m.name for m in cfg.models)
        jc = cfg.jobs
        self.ttl = jc.result_ttl_seconds
        self.store = open_store(jc.store, jc.sqlite_path, lambda message: log.error("job_store_failed", error=message))
        self.budget = ByteBudget(jc.max_retained_bytes, jc.max_retained_bytes_per_owner)
        self.jobs: dict[str, Job] = {}  # creation order
        self.counts = dict.fromkeys(STATUSES, 0)
        self.running: dict[str, float] = {}  # running job id -> when this attempt started (for progress)
        # Ids in deadline order, so expiry and eviction touch only the jobs concerned.
        self._created: deque[str] = deque()  # every job, until its start deadline has passed
        self._done: deque[str] = deque()  # finished jobs, in finishing order
        self._expired: deque[str] = deque()  # expired jobs: evicted first
        self._orders: dict[tuple[str, ...], tuple[str, ...]] = {}  # shared candidate tuples
        self._cleanup_timer: asyncio.TimerHandle | None = None
        self._closing = False

    # ---- reads --------------------------------------------------------------------------------------
    def summary(self) -> dict:
        c = self.counts
        return {
            "queued": c["queued"],
            "running": c["running"],
            "succeededRetained": c["succeeded"],
            "failedRetained": c["failed"],
            "cancelledRetained": c["cancelled"],
            "expiredRetained": c["expired"],
        }

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise HttpError(404, "Job not found", code="job_not_found")
        return job

    def page(self, limit: int = LIST_LIMIT, after: str | None = None,
             visible: Callable[[Job], bool] = lambda job: True) -> tuple[list[Job], str | None]:
        """The newest jobs first that ``visible`` accepts, starting after the job ``after``; and the id to
        ask ``after`` for the next page (None on the last one)."""
        jobs = reversed(self.jobs.values())
        if after is not None:
            mark = self.jobs.get(after)
            if mark is None or not visible(mark):
                raise HttpError(400, f"after: no retained job {after[:100]}; list again from the start",
                                code="invalid_cursor")
            for job in jobs:
                if job is mark:
                    break
        out: list[Job] = []
        for job in jobs:
            if visible(job):
                if len(out) == limit:
                    return out, out[-1].id
                out.append(job)
        return out, None

    def record(self, job: Job) -> dict:
        return job.record(self.ttl, self._bodies(job) if job.offloaded else None)

    def _bodies(self, job: Job) -> tuple[str | None, str | None]:
        try:
            return self.store.bodies(job.id)
        except StoreError as e:
            raise e.to_http() from None

    def result_response(self, job: Job) -> tuple[int, Any]:
        if job.status == "succeeded":
            result = self._bodies(job)[1] if job.offloaded else job.result_json
            return 200, json.loads(result or "{}")
        if job.status == "failed":
            return 500, {"status": "failed", "error": json.loads(job.error_json or "{}")}
        if job.status in ("cancelled", "expired"):
            what = "was cancelled" if job.status == "cancelled" else "has expired; its result is no longer kept"
            return 410, {"status": job.status, **error_payload(410, f"Job {job.id} {what}", f"job_{job.status}")}
        return 202, {"status": job.status}

    # ---- accepting ----------------------------------------------------------------------------------
    def submit(self, request: dict, model: str, task_type: str, priority: str, owner: str | None, *,
               candidates: Sequence[str] = (), path: str | None = None) -> tuple[Job, int]:
        """Store and queue a job; returns it with its position (waiting ahead on that model + 1).

        ``candidates`` is the decision's failover order (retries move along it); ``path`` the upstream
        path when not the OpenAI chat path. The job is on disk (sqlite) before this returns.
        """
        if self._closing:
            raise HttpError(503, "The router is shutting down", code="shutting_down", headers=[("Retry-After", "5")])
        scheduler = self.scheduler
        scheduler.check_queue_limits(owner)
        # A body read from the wire keeps its text: the stored request is exactly what was sent.
        request_json = request.text if isinstance(request, JsonObject) else dumps(request).decode("utf-8")
        order = (model,) + tuple(c for c in candidates if c != model)
        job = Job(
            id=new_job_id(self.cfg.server.node_id),
            status="queued",
            task_type=task_type,
            selected_model=model,
            candidates=self._orders.setdefault(order, order),
            path=path or self.cfg.ollama.open_ai_compatible_path,
            request_json=request_json,
            priority=scheduler.priority_weight(priority),
            created_at=self.clock(),
            owner=owner,
        )
        job.size = job.body_size()
        self._trim(room=job.size)
        self.budget.check(owner, job.size)
        try:
            self.store.insert(job)
        except StoreError as e:
            self.log.error("job_store_failed", error=str(e))
            raise e.to_http() from None
        self._add(job)
        position = scheduler.counts(model)[0] + 1
        self._enqueue(job)
        return job, position

    def _add(self, job: Job) -> None:
        self.jobs[job.id] = job
        self.counts[job.status] += 1
        self.budget.charge(job.owner, job.size)
        self._created.append(job.id)
        self._tell(job)

    def _resize(self, job: Job, size: int) -> None:
        self.budget.charge(job.owner, size - job.size)
        job.size = size

    def _offload(self, job: Job) -> None:
        """A finished job saved to a store that keeps bodies: its request and result leave memory."""
        if self.store.keeps_bodies:
            job.request_json = job.result_json = None
            job.offloaded = True

    def _set(self, job: Job, status: str) -> None:
        """Every state change passes here (after the job's other fields are set), and goes on the live feed."""
        self.counts[job.status] -= 1
        self.counts[status] += 1
        if status == "running":
            self.running[job.id] = self.clock()
        elif job.status == "running":
            del self.running[job.id]
        job.status = status
        self._tell(job)

    def _tell(self, job: Job) -> None:
        if self.events.subscribers:
            self.events.publish(self.event(job))

    @staticmethod
    def event(job: Job) -> JobEvent:
        """The job as the live feed shows it: its state, never its request or result."""
        return JobEvent(job.id, job.status, job.selected_model, job.task_type, priority_name(job.priority),
                        job.attempts, job.created_at, job.started_at, job.finished_at)

    def _enqueue(self, job: Job) -> None:
        job.ticket = self.scheduler.enqueue(job.selected_model, priority_name(job.priority), job.owner,
                                            functools.partial(self._start, job), check_limits=False)

    # ---- running ------------------------------------------------------------------------------------
    def _start(self, job: Job, slot: Slot) -> None:
        job.ticket = None
        if job.status != "queued" or self._closing:
            slot.release()
            return
        now = self.clock()
        if now >= job.expires_at(self.ttl):
            slot.release()
            self._expire(job)
            return
        job.attempts += 1
        job.started_at = job.started_at or now
        self._set(job, "running")
        self.store.save(job)
        job.task = asyncio.get_running_loop().create_task(self._run(job, slot))

    async def _run(self, job: Job, slot: Slot) -> None:
        try:
            assert job.request_json is not None  # a job to run has its request in memory
            # A large request comes back with its member spans: forwarded by splicing, not re-encoded.
            body = await parse_json_sliced(job.request_json, _TRUSTED, _TRUSTED)
            # No stream member becomes "stream": false; a true one was refused at submission.
            call = Call(job.path, lambda m: forward_body(body, m), [job.selected_model], priority_name(job.priority),
                        job.owner, None, None, failover=False, api="job")
            raw = await self.runner.complete(call, slot)
        except asyncio.CancelledError:
            return  # cancelled, or the router is stopping: whoever cancelled has set the status
        except HttpError as e:
            self._attempt_failed(job, e)
        except Exception as e:
            self.log.error("job_crashed", jobId=job.id, error=f"{type(e).__name__}: {e}")
            self._finish(job, "failed", error=error_json(500, "The job failed inside the router", "internal_error"))
        else:
            self._finish(job, "succeeded", result=dumps(json_or_raw(raw)).decode("utf-8"))
        finally:
            slot.release()
            job.task = None

    def _attempt_failed(self, job: Job, err: HttpError) -> None:
        if job.status != "running":
            return
        failure = error_json(err.status, err.message, err.code, err.extra)
        if err.status not in RETRYABLE_STATUSES or job.attempts >= self.cfg.jobs.max_attempts or self._closing:
            self._finish(job, "failed", error=failure)
            return
        if err.code != "ollama_unreachable":  # Ollama itself is down: another model would not help
            job.selected_model = self._next_model(job)
        self._set(job, "queued")
        job.error_json = failure  # the last failure stays visible while the job waits
        self.store.save(job)
        delay = min(MAX_BACKOFF_S, self.cfg.jobs.retry_backoff_ms / 1000 * 2 ** (job.attempts - 1))
        self.log.info("job_retry", jobId=job.id, attempt=job.attempts, model=job.selected_model,
                          delayMs=int(delay * 1000), error=err.message)
        job.timer = asyncio.get_running_loop().call_later(delay, self._retry, job)

    def _retry(self, job: Job) -> None:
        job.timer = None
        if job.status == "queued" and not self._closing:
            self._enqueue(job)

    def _next_model(self, job: Job) -> str:
        """The next candidate after the current model, skipping models in cooldown when another is left."""
        order = [m for m in job.candidates if m in self.models] or [job.selected_model]
        i = order.index(job.selected_model) if job.selected_model in order else -1
        ring = [order[(i + k) % len(order)] for k in range(1, len(order) + 1)]
        states = self.scheduler.states
        return next((m for m in ring if not states[m].cooldown), ring[0])

    def cancel(self, job: Job) -> None:
        """Cancel a queued or running job; other states are left as they are."""
        if job.status == "queued":
            self._withdraw(job)
        elif job.status == "running":
            if job.task is not None:
                job.task.cancel()  # aborts the upstream exchange; _run's finally frees the slot
        else:
            return
        self._finish(job, "cancelled")

    def _withdraw(self, job: Job) -> None:
        if job.ticket is not None:
            self.scheduler.cancel(job.ticket)
            job.ticket = None
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None

    def _finish(self, job: Job, status: str, *, result: str | None = None, error: str | None = None) -> None:
        if job.status not in ACTIVE:
            return
        job.finished_at = self.clock()
        job.result_json = result
        job.error_json = error
        self._set(job, status)
        self._resize(job, job.body_size())
        self.store.save(job)
        self._offload(job)
        self._done.append(job.id)
        self.metrics.jobs_finished.inc(status)
        self._trim()

    def _expire(self, job: Job) -> None:
        was_active = job.status in ACTIVE
        self._withdraw(job)
        self._set(job, "expired")
        job.request_json = job.result_json = job.error_json = None
        job.offloaded = False
        self._resize(job, 0)
        self.store.save(job)
        self._expired.append(job.id)
        if was_active:
            self.metrics.jobs_finished.inc("expired")

    # ---- retention ----------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Expire what is past its deadline, then evict beyond ``maxRetainedJobs``."""
        now = self.clock()
        ttl = self.ttl
        jobs = self.jobs
        while self._created:
            job = jobs.get(self._created[0])
            if job is not None and job.created_at + ttl > now:
                break
            self._created.popleft()
            if job is not None and job.status == "queued":
                self._expire(job)
        while self._done:
            job = jobs.get(self._done[0])
            if job is not None and job.finished_at is not None and job.finished_at + ttl > now:
                break
            self._done.popleft()
            if job is not None and job.status in FINISHED:
                self._expire(job)
        self._trim()

    def _trim(self, room: int = 0) -> None:
        """Evict expired, then the oldest finished jobs, while over ``maxRetainedJobs`` or while the bodies
        held (with ``room`` more) are over ``maxRetainedBytes``."""
        over = len(self.jobs) - self.cfg.jobs.max_retained_jobs
        excess = self.budget.total + room - self.budget.total_limit
        doomed: list[Job] = []
        for ids in (self._expired, self._done):
            while (over > 0 or excess > 0) and ids:
                job = self.jobs.get(ids.popleft())
                if job is not None and job.status not in ACTIVE:
                    doomed.append(job)
                    over -= 1
                    excess -= job.size
        self._delete(doomed)

    def _delete(self, jobs: Iterable[Job]) -> None:
        jobs = list(jobs)
        for job in jobs:
            del self.jobs[job.id]
            self.counts[job.status] -= 1
            self._resize(job, 0)
        if jobs:
            self.store.delete(jobs)

    def _cleanup_tick(self) -> None:
        self._cleanup_timer = None
        try:
            self.cleanup()
        finally:
            if not self._closing:
                self._arm_cleanup()

    def _arm_cleanup(self) -> None:
        self._cleanup_timer = asyncio.get_running_loop().call_later(
            self.cfg.jobs.cleanup_interval_ms / 1000, self._cleanup_tick)

    # ---- start and stop -----------------------------------------------------------------------------
    def start(self) -> None:
        """Read stored jobs back (sqlite), queue again what had not finished, and start the cleanup timer."""
        self._recover()
        self._arm_cleanup()

    def _recover(self) -> None:
        now = self.clock()
        models = self.models
        finished: list[Job] = []
        requeue: list[Job] = []
        for job in self.store.load():
            if job.status in ACTIVE and job.selected_model not in models:
                self._fail_stored(job, now, f"Model {job.selected_model} is no longer configured", "model_removed")
            elif job.status == "running" and job.attempts >= self.cfg.jobs.max_attempts:
                self._fail_stored(job, now, "The router stopped while this job was running, and the job has no "
                                  "attempts left", "job_interrupted")
            elif job.status == "running":
                job.status = "queued"
                self.store.save(job)
            self._add(job)
            if job.status == "queued":
                requeue.append(job)
            elif job.status == "expired":
                self._expired.append(job.id)
            else:
                finished.append(job)
        finished.sort(key=lambda j: j.finished_at or 0.0)
        self._done.extend(j.id for j in finished)
        for job in requeue:
            self._enqueue(job)
        if self.jobs:
            self.log.info("jobs_recovered", requeued=len(requeue), retained=len(self.jobs))

    def _fail_stored(self, job: Job, now: float, message: str, code: str) -> None:
        job.status = "failed"
        job.finished_at = now
        job.error_json = error_json(500, message, code)
        job.size = job.body_size()
        self.store.save(job)
        self._offload(job)

    def pause(self) -> None:
        """Shutdown has begun: take no new job and start no queued one; ``stop`` then ends the running ones."""
        self._closing = True

    async def stop(self, grace: float) -> None:
        """Stop starting jobs, give running ones ``grace`` seconds, then interrupt them.

        An interrupted job goes back to queued without the attempt counting, so a restart runs it again
        (sqlite); the memory store forgets everything anyway.
        """
        self._closing = True
        if self._cleanup_timer is not None:
            self._cleanup_timer.cancel()
            self._cleanup_timer = None
        running = []
        for job in self.jobs.values():
            if job.status == "queued":
                self._withdraw(job)
            elif job.status == "running" and job.task is not None:
                running.append(job)
        tasks = [job.task for job in running if job.task is not None]
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for job in running:
            if job.status == "running" and job.task is not None:
                job.attempts -= 1
                self._set(job, "queued")
                self.store.save(job)
                job.task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.store.close()
