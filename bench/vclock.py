"""Virtual time for benchmarks: an event loop whose clock jumps to its next timer whenever nothing is ready.

A workload of minutes (model loads of tens of seconds, replies of hundreds of tokens) then runs in the
seconds of CPU it really needs, and its figures do not depend on how fast or how busy this machine is:
every duration is simulated time, and the router's own CPU time counts as zero.

``install()`` replaces ``time.monotonic`` (and ``monotonic_ns``) with functions that read the virtual
clock while one is running, and the real clock otherwise. It must run before the package is imported,
because some constructors take ``time.monotonic`` as a default argument.

The loop still does real I/O over loopback sockets. Before jumping it asks the kernel once more (after
yielding the CPU) whether a socket is ready: a loopback write is normally readable at the other end before
``send`` returns, so a jump never skips bytes in flight. While a thread of the loop's executor is working,
the loop waits in real time instead of jumping.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import time
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")

_real_monotonic = time.monotonic
_real_monotonic_ns = time.monotonic_ns
_active: "VirtualClock | None" = None


class VirtualClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start
        self.jumps = 0

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.jumps += 1


def _monotonic() -> float:
    return _active.now if _active is not None else _real_monotonic()


def _monotonic_ns() -> int:
    return int(_active.now * 1e9) if _active is not None else _real_monotonic_ns()


def install() -> None:
    """Route ``time.monotonic`` through the virtual clock whenever ``run`` is running one."""
    time.monotonic = _monotonic
    time.monotonic_ns = _monotonic_ns


class _Selector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self.clock = clock
        self.threads = 0  # executor jobs in flight: time must pass for real while they work

    def select(self, timeout: float | None = None) -> list:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        os.sched_yield()  # let a softirq or another CPU finish delivering a loopback write
        ready = super().select(0)
        if ready:
            return ready
        if timeout is None or self.threads:
            return super().select(timeout)
        self.clock.advance(timeout)
        return []


class _Loop(asyncio.SelectorEventLoop):
    def __init__(self, selector: _Selector) -> None:
        super().__init__(selector)
        self._vselector = selector

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        fut = super().run_in_executor(executor, func, *args)
        self._vselector.threads += 1

        def done(_: Any) -> None:
            self._vselector.threads -= 1

        fut.add_done_callback(done)
        return fut


def run(main: Callable[[], Awaitable[T]], start: float = 1_000.0) -> T:
    """Run ``main()`` to completion on a fresh loop in virtual time (``install()`` must have run)."""
    global _active
    if time.monotonic is not _monotonic:
        raise RuntimeError("vclock.install() must run before the code under test is imported")
    clock = VirtualClock(start)
    loop = _Loop(_Selector(clock))
    _active = clock
    try:
        return loop.run_until_complete(main())
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            _active = None
            loop.close()
