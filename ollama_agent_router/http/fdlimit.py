"""Open files: client connections must fit under RLIMIT_NOFILE, and accept() failing for want of a
descriptor must not flood the log.

Without this, a process left at the common soft limit of 1024 with the default cap of 1024 connections
runs out of descriptors before the cap: accept() fails, the 503 ``too_many_connections`` never fires,
and asyncio reports every failed accept with a traceback (Python 3.11 retries the rest of the backlog
after the first failure, so that is up to a backlog's worth of tracebacks per loop turn).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..log import Logger

try:
    import resource
except ImportError:  # Windows: no rlimits; the cap stays as configured
    resource = None  # type: ignore[assignment]

ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message for EMFILE, ENFILE, ENOBUFS, ENOMEM
ACCEPT_LOG_INTERVAL = 10.0  # seconds between two log lines about failed accepts


def reserve(limit: int) -> int:
    """Descriptors kept back from client connections: upstream connections to Ollama, the listeners,
    log and database files, and refused connections lingering while their 503 goes out."""
    return max(64, limit // 8)


def fit_connections(max_connections: int, log: Logger) -> int:
    """Raise the soft open-files limit toward the hard one as far as ``max_connections`` needs, and
    return the connection cap that leaves a ``reserve`` under the limit that holds (logged if lowered)."""
    if resource is None:
        return max_connections
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_connections + reserve(max_connections)
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(hard, want)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open_files_limit_raised", previous=soft, now=target)
            soft = target
        except (ValueError, OSError):
            pass  # e.g. macOS refuses more than kern.maxfilesperproc: keep what we have
    if soft == resource.RLIM_INFINITY or soft >= want:
        return max_connections
    cap = max(1, soft - reserve(soft))
    log.warning(
        "max_connections_lowered", maxConnections=max_connections, now=cap, openFilesLimit=soft,
        hardLimit="unlimited" if hard == resource.RLIM_INFINITY else hard,
        hint="raise the open-files limit (ulimit -n, or LimitNOFILE= for systemd) or lower server.maxConnections",
    )
    return cap


class AcceptErrorLog:
    """A loop exception handler that turns failed accepts into one log line per ``interval`` seconds,
    with how many failed; everything else goes to the handler that was there before."""

    def __init__(self, log: Logger, previous: Any, interval: float = ACCEPT_LOG_INTERVAL) -> None:
        self.log = log
        self.previous = previous
        self.interval = interval
        self.failures = 0
        self.error = ""
        self._last = float("-inf")
        self._flush: asyncio.TimerHandle | None = None

    @classmethod
    def install(cls, loop: asyncio.AbstractEventLoop, log: Logger) -> None:
        current = loop.get_exception_handler()
        if not isinstance(current, cls):
            loop.set_exception_handler(cls(log, current))

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != ACCEPT_FAILED:
            if self.previous is not None:
                self.previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.failures += 1
        exc = context.get("exception")
        self.error = f"{type(exc).__name__}: {exc}" if exc is not None else ACCEPT_FAILED
        if self._flush is None:  # the first failure after a quiet spell is logged on the next loop turn
            delay = max(0.0, self._last + self.interval - loop.time())
            self._flush = loop.call_later(delay, self._log, loop)

    def _log(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush = None
        self._last = loop.time()
        self.log.warning("accept_failed", failures=self.failures, error=self.error,
                         hint="out of file descriptors: raise the open-files limit or lower server.maxConnections")
        self.failures = 0
