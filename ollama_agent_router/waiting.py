"""The waiting shell around the scheduler: a future and a deadline around a ticket.

The scheduler itself is plain synchronous code; this is where a request's coroutine waits for its slot,
gives up after its queue budget, and hands the slot back when it is cancelled at the wrong moment.
"""

from __future__ import annotations

import asyncio

from .scheduler import Scheduler, Slot, Ticket


class WaitTimeout(Exception):
    """A ticket was not started within its maximum queue time; it has been removed from the queue."""


async def acquire(scheduler: Scheduler, model: str, priority: str = "normal", *, user: str | None = None,
                  max_wait: float | None = None) -> Slot:
    """Wait for a slot on ``model`` (and unload its ``Slot.unload``). Raises QueueLimit at once when full,
    WaitTimeout after ``max_wait``."""
    slot = scheduler.try_acquire(model, user, priority)
    if slot is None:
        slot = await _wait(scheduler, model, priority, user, max_wait)
    if slot.unload:
        try:
            await scheduler.effects.unload(slot.unload)
        except BaseException:
            slot.release()
            raise
    return slot


async def _wait(scheduler: Scheduler, model: str, priority: str, user: str | None, max_wait: float | None) -> Slot:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Slot] = loop.create_future()

    def started(slot: Slot) -> None:
        if future.done():  # the waiter went away between its cancellation and its cleanup
            slot.release()
        else:
            future.set_result(slot)

    ticket = scheduler.enqueue(model, priority, user, started, max_wait=max_wait)
    timer = None
    if max_wait is not None and not future.done():
        timer = loop.call_later(max(0.0, max_wait), _expire, scheduler, ticket, future)
    try:
        return await future
    except BaseException:
        if future.done() and not future.cancelled() and future.exception() is None:
            future.result().release()  # started just as we were cancelled: hand the slot back
        else:
            scheduler.cancel(ticket)
        raise
    finally:
        if timer is not None:
            timer.cancel()


def _expire(scheduler: Scheduler, ticket: Ticket, future: asyncio.Future) -> None:
    if scheduler.cancel(ticket) and not future.done():
        future.set_exception(WaitTimeout())
