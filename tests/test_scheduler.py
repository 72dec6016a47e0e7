"""Scheduler invariants with plain data: slots, exclusivity, priority order, aging, limits, cancellation."""

import asyncio

import pytest

from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, make_config
from ollama_agent_router.scheduler import QueueLimit, Scheduler, WaitTimeout


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(coro):
    return asyncio.run(coro)


def test_max_concurrent_and_fifo_within_priority():
    async def main():
        s = Scheduler(make_config())
        first = await s.acquire(QWEN)
        order = []

        async def waiter(tag, prio):
            slot = await s.acquire(QWEN, prio)
            order.append(tag)
            slot.release()

        tasks = [asyncio.create_task(waiter(t, p)) for t, p in
                 [("normal1", "normal"), ("low", "low"), ("normal2", "normal"), ("high", "high")]]
        await asyncio.sleep(0)
        assert s.counts(QWEN) == (4, 1)
        first.release()
        await asyncio.gather(*tasks)
        assert order == ["high", "normal1", "normal2", "low"]
        assert s.counts(QWEN) == (0, 0) and s.total_waiting == 0 and s.total_running == 0
        assert s.queues[QWEN].peak_running == 1

    run(main())


def test_exclusive_runs_alone():
    async def main():
        s = Scheduler(make_config())
        a = await s.acquire(GPTOSS)
        assert s.try_acquire(GPTOSS) is None
        a.release()
        assert s.try_acquire(GPTOSS) is not None

    run(main())


def test_aging_promotes_low_priority():
    async def main():
        clock = Clock()
        s = Scheduler(make_config({"queue": {"agingMs": 1000}}), clock=clock)
        hold = await s.acquire(QWEN)
        order = []

        async def waiter(tag, prio):
            slot = await s.acquire(QWEN, prio)
            order.append(tag)
            slot.release()

        low = asyncio.create_task(waiter("low", "low"))
        await asyncio.sleep(0)
        clock.t = 2.5  # low has aged two levels: it now counts as high, and it is older
        high = asyncio.create_task(waiter("high", "high"))
        await asyncio.sleep(0)
        hold.release()
        await asyncio.gather(low, high)
        assert order == ["low", "high"]

    run(main())


def test_global_concurrency_limit():
    async def main():
        s = Scheduler(make_config({"queue": {"globalMaxConcurrent": 2}}))
        a = await s.acquire(VIBE)
        b = await s.acquire(QWEN)
        assert s.try_acquire(DEEPSEEK) is None
        waiter = asyncio.create_task(s.acquire(DEEPSEEK))
        await asyncio.sleep(0)
        assert s.total_waiting == 1
        a.release()
        c = await waiter
        assert s.total_running == 2
        for slot in (b, c):
            slot.release()
        assert s.total_running == 0

    run(main())


def test_global_and_per_user_queue_limits():
    async def main():
        s = Scheduler(make_config({"queue": {"globalMaxQueued": 2, "perUserMaxQueued": 1}}))
        hold = await s.acquire(QWEN)
        t1 = asyncio.create_task(s.acquire(QWEN, user="alice"))
        await asyncio.sleep(0)
        with pytest.raises(QueueLimit) as e:
            await s.acquire(QWEN, user="alice")
        assert e.value.status == 429 and ("Retry-After", "1") in e.value.headers
        t2 = asyncio.create_task(s.acquire(QWEN, user="bob"))
        await asyncio.sleep(0)
        with pytest.raises(QueueLimit):
            await s.acquire(QWEN, user="carol")
        t1.cancel()
        t2.cancel()
        await asyncio.gather(t1, t2, return_exceptions=True)
        assert s.total_waiting == 0 and s.user_waiting == {}
        hold.release()

    run(main())


def test_wait_timeout_withdraws_the_ticket():
    async def main():
        s = Scheduler(make_config())
        hold = await s.acquire(QWEN)
        with pytest.raises(WaitTimeout):
            await s.acquire(QWEN, max_wait=0.01)
        assert s.total_waiting == 0
        hold.release()
        assert s.total_running == 0

    run(main())


def test_cancelled_waiter_never_holds_a_slot():
    async def main():
        s = Scheduler(make_config())
        hold = await s.acquire(QWEN)
        t = asyncio.create_task(s.acquire(QWEN))
        await asyncio.sleep(0)
        hold.release()  # hands the slot to t ...
        t.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await t
        assert s.total_running == 0 and s.total_waiting == 0

    run(main())


def test_release_is_idempotent():
    async def main():
        s = Scheduler(make_config())
        a = await s.acquire(VIBE)
        a.release()
        a.release()
        assert s.total_running == 0 and s.counts(VIBE) == (0, 0)

    run(main())


def test_callback_tickets_for_jobs():
    async def main():
        s = Scheduler(make_config())
        hold = await s.acquire(QWEN)
        started = []
        t = s.enqueue(QWEN, "normal", None, on_start=started.append)
        assert s.counts(QWEN) == (1, 1)
        hold.release()
        assert len(started) == 1 and s.counts(QWEN) == (0, 1)
        started[0].release()
        assert not s.cancel(t)

    run(main())


def test_queue_depth_scales():
    async def main():
        s = Scheduler(make_config({"queue": {"globalMaxQueued": 200000}}))
        hold = await s.acquire(QWEN)
        for i in range(100_000):
            s.enqueue(QWEN, ("low", "normal", "high")[i % 3], None, on_start=lambda slot: slot.release())
        assert s.total_waiting == 100_000
        hold.release()  # drains all: each callback releases at once
        assert s.total_waiting == 0 and s.total_running == 0

    run(main())
