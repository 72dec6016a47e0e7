"""Key derivation off the event loop: the one place the router runs work on threads.

A ``pbkdf2-sha256:`` or ``scrypt:`` key check costs tens to hundreds of milliseconds of CPU by design; on
the loop, every unknown key would stall every other request that long. It runs on a small thread pool
instead (hashlib releases the GIL while it derives), with at most ``max_pending`` checks running or
waiting: beyond that a request is refused at once with 503, not queued behind an attacker's keys. One
client address has one check at a time (a second is 429), so a failed check is counted against its
failed-authentication limit, which the caller consults first, before it can start the next one.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Hashable, TypeVar

from ..errors import HttpError

T = TypeVar("T")

WORKERS = 2
MAX_PENDING = 8


class Deriver:
    def __init__(self, workers: int = WORKERS, max_pending: int = MAX_PENDING) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self.busy: set[Hashable] = set()  # the clients with a derivation running or waiting
        self._pool: ThreadPoolExecutor | None = None  # made on first use: most configs have no salted keys

    async def run(self, derive: Callable[[str], T], key: str, client: Hashable) -> T:
        """``derive(key)`` on a worker thread, for ``client`` (its address bucket)."""
        if client in self.busy:
            raise HttpError(429, "Another API key from this address is being checked; retry shortly",
                            code="auth_rate_limited", headers=[("Retry-After", "1")])
        if len(self.busy) >= self.max_pending:
            raise HttpError(503, "Too many API keys are being checked at once; retry shortly", code="auth_busy",
                            headers=[("Retry-After", "1")])
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="oar-kdf")
        self.busy.add(client)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, derive, key)
        finally:
            self.busy.discard(client)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
