"""Job records and where they are kept: in memory only, or also in sqlite so they survive a restart.

The job manager keeps every retained job's state in memory either way. With the memory store the request
and result bodies live there too; with sqlite a finished job's bodies live only in the database and are
read back one job at a time (``bodies``). Its writes are single-row statements on the event loop:

- ``insert`` commits before it returns, so a job is on disk before its 202 is sent;
- ``save`` (status changes, results) records the job's row as it is now; the rows of one loop turn are
  written in one transaction at the end of that turn, and written again later if that failed;
- WAL with ``synchronous=NORMAL``: a commit is in the WAL file (the OS has it) when ``commit`` returns, so
  killing the router cannot lose it; only a power cut can lose the last commits before a checkpoint;
- another process holding the database lock costs a statement at most ``BUSY_TIMEOUT_MS``: a short wait,
  then ``StoreError`` with ``locked`` set, never seconds of a frozen event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

from .errors import HttpError
from .jsonutil import iso_ms
from .scheduler import Ticket

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")
ACTIVE = frozenset({"queued", "running"})
FINISHED = frozenset({"succeeded", "failed", "cancelled"})
BUSY_TIMEOUT_MS = 20  # the longest a statement waits for another process's lock
RETRY_FLUSH_S = 1.0  # rows that could not be written are tried again after this long


@dataclass(eq=False, slots=True)
class Job:
    id: str
    status: str
    task_type: str
    selected_model: str  # the model of the current (or last) attempt
    candidates: tuple[str, ...]  # failover order, the first choice first; retries move along it
    path: str  # the upstream path the request goes to
    request_json: str | None  # the request as the client sent it (JSON); None once expired, or kept in sqlite
    priority: int  # the weight: low 10, normal 50, high 90
    created_at: float
    owner: str | None = None  # the principal's ``user`` ("key:<id>" or "ip:<addr>")
    result_json: str | None = None
    error_json: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    # Runtime only, never stored: what is holding the job in the scheduler or running it, what its bodies
    # count against the byte budget, and whether they are kept in the store instead of here.
    ticket: Ticket | None = None
    task: asyncio.Task | None = None
    timer: asyncio.TimerHandle | None = None
    size: int = 0
    offloaded: bool = False

    def expires_at(self, ttl_seconds: int) -> float:
        """Finished: the result is kept ``ttl`` after completion. Not finished: it must start within ``ttl``."""
        return (self.finished_at or self.created_at) + ttl_seconds

    def body_size(self) -> int:
        """Bytes of the bodies held in memory (UTF-8)."""
        return sum(_utf8_len(text) for text in (self.request_json, self.result_json, self.error_json) if text)

    def record(self, ttl_seconds: int, bodies: tuple[str | None, str | None] | None = None) -> dict:
        """The original's JobRecord (spec §7.1), snake_case, JSON kept as JSON strings. ``bodies`` (request,
        result) when they are kept in the store."""
        request_json, result_json = bodies or (self.request_json, self.result_json)
        return {
            "id": self.id,
            "status": self.status,
            "task_type": self.task_type,
            "selected_model": self.selected_model,
            "request_json": request_json,
            "result_json": result_json,
            **self.summary(ttl_seconds),
        }

    def summary(self, ttl_seconds: int) -> dict:
        """What a job list shows: the record without the request and result bodies."""
        return {
            "id": self.id,
            "status": self.status,
            "task_type": self.task_type,
            "selected_model": self.selected_model,
            "error_json": self.error_json,
            "attempts": self.attempts,
            "priority": self.priority,
            "created_at": iso_ms(self.created_at),
            "started_at": iso_ms(self.started_at) if self.started_at else None,
            "finished_at": iso_ms(self.finished_at) if self.finished_at else None,
            "expires_at": iso_ms(self.expires_at(ttl_seconds)),
        }


_COLUMNS = ("id", "status", "task_type", "selected_model", "candidates", "path", "request_json", "priority",
            "created_at", "owner", "result_json", "error_json", "attempts", "started_at", "finished_at")
if TYPE_CHECKING:
    pass

_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, task_type TEXT NOT NULL, selected_model TEXT NOT NULL,
    candidates TEXT NOT NULL, path TEXT NOT NULL, request_json TEXT NOT NULL, priority INTEGER NOT NULL,
    created_at REAL NOT NULL, owner TEXT, result_json TEXT, error_json TEXT, attempts INTEGER NOT NULL,
    started_at REAL, finished_at REAL)"""
_UPSERT = (f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})")
_DELETE_CHUNK = 500  # sqlite's bound-parameter limit is 999 on old builds


# Start-up reads no bodies but those of jobs that still have to run; their sizes come along for the budget.
_LOAD = (f"SELECT {', '.join(_COLUMNS[:6])}, CASE WHEN status IN ('queued', 'running') THEN request_json END, "
         f"{', '.join(_COLUMNS[7:10])}, NULL, {', '.join(_COLUMNS[11:])}, "
         "length(CAST(request_json AS BLOB)) + ifnull(length(CAST(result_json AS BLOB)), 0) "
         "+ ifnull(length(CAST(error_json AS BLOB)), 0) FROM jobs ORDER BY created_at")
_REQUEST, _RESULT = _COLUMNS.index("request_json"), _COLUMNS.index("result_json")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _row(job: Job) -> tuple:
    assert not job.offloaded, "a row without its bodies would overwrite them"
    return (job.id, job.status, job.task_type, job.selected_model, json.dumps(job.candidates), job.path,
            job.request_json or "", job.priority, job.created_at, job.owner, job.result_json, job.error_json,
            job.attempts, job.started_at, job.finished_at)


def _job(row: Sequence) -> Job:
    values = dict(zip(_COLUMNS, row))
    values["candidates"] = tuple(json.loads(values["candidates"]))
    values["request_json"] = values["request_json"] or None  # an expired job's request is gone
    job = Job(**values, size=row[len(_COLUMNS)])
    job.offloaded = job.status in FINISHED
    return job


class JobStore(Protocol):
    keeps_bodies: bool  # a finished job's request and result live here, not in memory

    def load(self) -> list[Job]:
        """Every stored job, oldest first; only the bodies of jobs still to run are read."""

    def insert(self, job: Job) -> None:
        """Store a new job durably before returning."""

    def save(self, job: Job) -> None:
        """Store a changed job (soon: at the end of this loop turn)."""

    def bodies(self, job_id: str) -> tuple[str | None, str | None]:
        """A stored job's request and result (``keeps_bodies`` stores only)."""

    def delete(self, jobs: Iterable[Job]) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """Nothing beyond the manager's own dictionary: jobs end with the process."""

    keeps_bodies = False

    def load(self) -> list[Job]:
        return []

    def insert(self, job: Job) -> None:
        pass

    def save(self, job: Job) -> None:
        pass

    def bodies(self, job_id: str) -> tuple[str | None, str | None]:
        raise AssertionError("the memory store keeps no bodies")

    def delete(self, jobs: Iterable[Job]) -> None:
        pass

    def close(self) -> None:
        pass


class StoreError(Exception):
    """The job store could not read or write (disk full, locked, corrupt)."""

    def __init__(self, message: str, locked: bool) -> None:
        super().__init__(message)
        self.locked = locked  # another process holds the database: worth a retry soon

    def to_http(self) -> HttpError:
        if self.locked:
            return HttpError(503, "The job store is locked by another process; retry shortly",
                             code="job_store_locked", headers=[("Retry-After", "1")])
        return HttpError(503, "The job store cannot be used right now", code="job_store_unavailable",
                         headers=[("Retry-After", "5")])


class SqliteStore:
    keeps_bodies = True

    def __init__(self, path: str, on_error: Callable[[str], None] = lambda message: None) -> None:
        import sqlite3  # only deployments with jobs.store: sqlite pay for the module

        self._errors = sqlite3.Error
        self.on_error = on_error
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # Autocommit mode: each statement outside an explicit BEGIN is its own transaction. Start-up may
        # wait for a lock as long as sqlite's default; requests never wait longer than BUSY_TIMEOUT_MS.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._rows: dict[str, tuple] = {}  # rows to write, as they were when saved
        self._doomed: set[str] = set()  # ids to delete
        self._flush_scheduled = False

    def load(self) -> list[Job]:
        return [_job(row) for row in self.db.execute(_LOAD)]

    def insert(self, job: Job) -> None:
        self._rows.pop(job.id, None)
        try:
            self.db.execute(_UPSERT, _row(job))
        except self._errors as e:
            raise self._error(e) from None

    def save(self, job: Job) -> None:
        self._rows[job.id] = _row(job)
        self._schedule()

    def bodies(self, job_id: str) -> tuple[str | None, str | None]:
        row: Sequence | None = self._rows.get(job_id)
        try:
            if row is None:
                row = self.db.execute("SELECT request_json, result_json FROM jobs WHERE id = ?", (job_id,)).fetchone()
                row = (None, None) if row is None else (row[0], row[1])
            else:
                row = (row[_REQUEST], row[_RESULT])
        except self._errors as e:
            raise self._error(e) from None
        return row[0] or None, row[1]

    def delete(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self._rows.pop(job.id, None)
            self._doomed.add(job.id)
        self._schedule()

    def _schedule(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Write this turn's rows and deletions in one transaction; on failure keep them for a later try."""
        self._flush_scheduled = False
        if not self._rows and not self._doomed:
            return
        rows, doomed = self._rows, self._doomed
        self._rows, self._doomed = {}, set()
        try:
            self.db.execute("BEGIN IMMEDIATE")  # the write lock first: a locked database fails here, fast
            self.db.executemany(_UPSERT, rows.values())
            ids = list(doomed)
            for i in range(0, len(ids), _DELETE_CHUNK):
                chunk = ids[i : i + _DELETE_CHUNK]
                self.db.execute(f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
            self.db.execute("COMMIT")
        except self._errors as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            self._rows, self._doomed = rows, doomed  # kept for the retry; saves meanwhile replace their rows
            self.on_error(f"{type(e).__name__}: {e}; retrying in {RETRY_FLUSH_S:g}s")
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(RETRY_FLUSH_S, self.flush)

    def _error(self, e: Exception) -> StoreError:
        text = str(e)
        return StoreError(f"{type(e).__name__}: {text}", locked="locked" in text or "busy" in text)

    def close(self) -> None:
        self.flush()
        self.db.close()


def open_store(kind: str, sqlite_path: str | None, on_error: Callable[[str], None]) -> JobStore:
    if kind == "sqlite":
        assert sqlite_path is not None  # config parsing supplies a default next to the config file
        return SqliteStore(sqlite_path, on_error)
    return MemoryStore()


class ByteBudget:
    """Bytes held by queued and retained jobs (requests, results, errors), in total and per owner."""

    def __init__(self, total_limit: int, owner_limit: int) -> None:
        self.total_limit = total_limit
        self.owner_limit = owner_limit
        self.total = 0
        self.by_owner: dict[str | None, int] = {}

    def charge(self, owner: str | None, delta: int) -> None:
        self.total += delta
        held = self.by_owner.get(owner, 0) + delta
        if held:
            self.by_owner[owner] = held
        else:
            self.by_owner.pop(owner, None)

    def check(self, owner: str | None, size: int) -> None:
        """429 when a new job of ``size`` bytes would not fit."""
        held = self.by_owner.get(owner, 0)
        if held + size > self.owner_limit:
            raise _full(f"Your queued and retained jobs hold {_mb(held)} of the {_mb(self.owner_limit)} one caller "
                        f"may use (jobs.maxRetainedBytesPerOwner), and this one needs {_mb(size)}")
        if self.total + size > self.total_limit:
            raise _full(f"Queued and retained jobs hold {_mb(self.total)} of the {_mb(self.total_limit)} the router "
                        f"keeps for jobs (jobs.maxRetainedBytes), and this one needs {_mb(size)}")


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _full(message: str) -> HttpError:
    return HttpError(429, f"{message}; retry when earlier jobs have finished or their results have expired",
                     code="job_storage_full", headers=[("Retry-After", "30")])
