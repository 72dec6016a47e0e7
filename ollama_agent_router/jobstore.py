"""Job records and where they are kept: in memory only, or also in sqlite so they survive a restart.

The job manager keeps every retained job in memory either way; the sqlite store is a write-through copy,
read back once at start-up. Its writes are single-row statements on the event loop:

- ``insert`` commits before it returns, so a job is on disk before its 202 is sent;
- ``save`` (status changes, results) marks the job dirty; the dirty jobs of one loop turn are written in
  one transaction at the end of that turn;
- WAL with ``synchronous=NORMAL``: a commit is in the WAL file (the OS has it) when ``commit`` returns, so
  killing the router cannot lose it; only a power cut can lose the last commits before a checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol, Sequence

from .jsonutil import iso_ms
from .scheduler import Ticket

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "expired")
ACTIVE = frozenset({"queued", "running"})


@dataclass(eq=False, slots=True)
class Job:
    id: str
    status: str
    task_type: str
    selected_model: str  # the model of the current (or last) attempt
    candidates: tuple[str, ...]  # failover order, the first choice first; retries move along it
    path: str  # the upstream path the request goes to
    request_json: str  # the request as the client sent it (compact JSON)
    priority: int  # the weight: low 10, normal 50, high 90
    created_at: float
    owner: str | None = None  # the principal's ``user`` ("key:<id>" or "ip:<addr>")
    result_json: str | None = None
    error_json: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    # Runtime only, never stored: what is holding the job in the scheduler or running it.
    ticket: Ticket | None = None
    task: asyncio.Task | None = None
    timer: asyncio.TimerHandle | None = None

    def expires_at(self, ttl_seconds: int) -> float:
        """Finished: the result is kept ``ttl`` after completion. Not finished: it must start within ``ttl``."""
        return (self.finished_at or self.created_at) + ttl_seconds

    def record(self, ttl_seconds: int) -> dict:
        """The original's JobRecord (spec §7.1), snake_case, JSON kept as JSON strings."""
        return {
            "id": self.id,
            "status": self.status,
            "task_type": self.task_type,
            "selected_model": self.selected_model,
            "request_json": self.request_json,
            "result_json": self.result_json,
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
    import sqlite3

_SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, task_type TEXT NOT NULL, selected_model TEXT NOT NULL,
    candidates TEXT NOT NULL, path TEXT NOT NULL, request_json TEXT NOT NULL, priority INTEGER NOT NULL,
    created_at REAL NOT NULL, owner TEXT, result_json TEXT, error_json TEXT, attempts INTEGER NOT NULL,
    started_at REAL, finished_at REAL)"""
_UPSERT = (f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})")
_DELETE_CHUNK = 500  # sqlite's bound-parameter limit is 999 on old builds


def _row(job: Job) -> tuple:
    return (job.id, job.status, job.task_type, job.selected_model, json.dumps(job.candidates), job.path,
            job.request_json, job.priority, job.created_at, job.owner, job.result_json, job.error_json,
            job.attempts, job.started_at, job.finished_at)


def _job(row: Sequence) -> Job:
    values = dict(zip(_COLUMNS, row))
    values["candidates"] = tuple(json.loads(values["candidates"]))
    return Job(**values)


class JobStore(Protocol):
    def load(self) -> list[Job]:
        """Every stored job, oldest first."""

    def insert(self, job: Job) -> None:
        """Store a new job durably before returning."""

    def save(self, job: Job) -> None:
        """Store a changed job (soon: at the end of this loop turn)."""

    def delete(self, jobs: Iterable[Job]) -> None: ...

    def close(self) -> None: ...


class MemoryStore:
    """Nothing beyond the manager's own dictionary: jobs end with the process."""

    def load(self) -> list[Job]:
        return []

    def insert(self, job: Job) -> None:
        pass

    def save(self, job: Job) -> None:
        pass

    def delete(self, jobs: Iterable[Job]) -> None:
        pass

    def close(self) -> None:
        pass


class StoreError(Exception):
    """The job store could not write (disk full, locked, corrupt)."""


class SqliteStore:
    def __init__(self, path: str, on_error: Callable[[str], None] = lambda message: None) -> None:
        import sqlite3  # only deployments with jobs.store: sqlite pay for the module

        self._errors = sqlite3.Error
        self.on_error = on_error
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        # Autocommit mode: each statement outside an explicit BEGIN is its own transaction.
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(_SCHEMA)
        self._dirty: dict[str, Job] = {}
        self._flush_scheduled = False

    def load(self) -> list[Job]:
        return [_job(row) for row in self.db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY created_at")]

    def insert(self, job: Job) -> None:
        self._dirty.pop(job.id, None)
        try:
            self.db.execute(_UPSERT, _row(job))
        except self._errors as e:
            raise StoreError(f"{type(e).__name__}: {e}") from None

    def save(self, job: Job) -> None:
        self._dirty[job.id] = job
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._dirty:
            return
        rows = [_row(job) for job in self._dirty.values()]
        self._dirty.clear()
        try:
            with self._transaction():
                self.db.executemany(_UPSERT, rows)
        except self._errors as e:
            # The jobs stay correct in memory; only their restart copy is stale.
            self.on_error(f"{type(e).__name__}: {e}")

    def delete(self, jobs: Iterable[Job]) -> None:
        ids = [job.id for job in jobs]
        for job_id in ids:
            self._dirty.pop(job_id, None)
        try:
            with self._transaction():
                for i in range(0, len(ids), _DELETE_CHUNK):
                    chunk = ids[i : i + _DELETE_CHUNK]
                    self.db.execute(f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        except self._errors as e:
            self.on_error(f"{type(e).__name__}: {e}")

    def _transaction(self) -> "_Transaction":
        return _Transaction(self.db)

    def close(self) -> None:
        self.flush()
        self.db.close()


class _Transaction:
    def __init__(self, db: "sqlite3.Connection") -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def open_store(kind: str, sqlite_path: str | None, on_error: Callable[[str], None]) -> JobStore:
    if kind == "sqlite":
        assert sqlite_path is not None  # config parsing supplies a default next to the config file
        return SqliteStore(sqlite_path, on_error)
    return MemoryStore()
