"""Scheduler invariants with plain data: slots, exclusivity, priority order, aging, limits, cancellation."""

import asyncio

import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, make_config

from ollama_agent_router.scheduler import QueueLimit, Scheduler
from ollama_agent_router.waiting import WaitTimeout, acquire


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(coro):
    return asyncio.run(coro)


def test_max_concurrent_and_fifo_within_priority():
    async def main():
        s = sched()[0]
        first = await acquire(s, QWEN)
        order = []
        running = []

        async def waiter(tag, prio):
            slot = await acquire(s, QWEN, prio)
            order.append(tag)
            running.append(s.counts(QWEN)[1])
            slot.release()

        tasks = [asyncio.create_task(waiter(t, p)) for t, p in
                 [("normal1", "normal"), ("low", "low"), ("normal2", "normal"), ("high", "high")]]
        await asyncio.sleep(0)
        assert s.counts(QWEN) == (4, 1)
        first.release()
        await asyncio.gather(*tasks)
        assert order == ["high", "normal1", "normal2", "low"]
        assert s.counts(QWEN) == (0, 0) and s.total_waiting == 0 and s.total_running == 0
        assert running == [1, 1, 1, 1]  # maxConcurrent 1: each ran alone

    run(main())


def test_exclusive_runs_alone():
    async def main():
        s = sched()[0]
        a = await acquire(s, GPTOSS)
        assert s.try_acquire(GPTOSS) is None
        a.release()
        assert s.try_acquire(GPTOSS) is not None

    run(main())


def test_aging_promotes_low_priority():
    async def main():
        clock = Clock()
        s = sched(make_config({"queue": {"agingMs": 1000}}), clock=clock)[0]
        hold = await acquire(s, QWEN)
        order = []
        running = []

        async def waiter(tag, prio):
            slot = await acquire(s, QWEN, prio)
            order.append(tag)
            running.append(s.counts(QWEN)[1])
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
        s = sched(make_config({"queue": {"globalMaxConcurrent": 2}}))[0]
        a = await acquire(s, VIBE)
        b = await acquire(s, QWEN)
        assert s.try_acquire(DEEPSEEK) is None
        waiter = asyncio.create_task(acquire(s, DEEPSEEK))
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
        s = sched(make_config({"queue": {"globalMaxQueued": 2, "perUserMaxQueued": 1}}))[0]
        hold = await acquire(s, QWEN)
        t1 = asyncio.create_task(acquire(s, QWEN, user="alice"))
        await asyncio.sleep(0)
        with pytest.raises(QueueLimit) as e:
            await acquire(s, QWEN, user="alice")
        assert e.value.status == 429 and ("Retry-After", "1") in e.value.headers
        t2 = asyncio.create_task(acquire(s, QWEN, user="bob"))
        await asyncio.sleep(0)
        with pytest.raises(QueueLimit):
            await acquire(s, QWEN, user="carol")
        t1.cancel()
        t2.cancel()
        await asyncio.gather(t1, t2, return_exceptions=True)
        assert s.total_waiting == 0 and s.user_waiting == {}
        hold.release()

    run(main())


def test_wait_timeout_withdraws_the_ticket():
    async def main():
        s = sched()[0]
        hold = await acquire(s, QWEN)
        with pytest.raises(WaitTimeout):
            await acquire(s, QWEN, max_wait=0.01)
        assert s.total_waiting == 0
        hold.release()
        assert s.total_running == 0

    run(main())


def test_cancelled_waiter_never_holds_a_slot():
    async def main():
        s = sched()[0]
        hold = await acquire(s, QWEN)
        t = asyncio.create_task(acquire(s, QWEN))
        await asyncio.sleep(0)
        hold.release()  # hands the slot to t ...
        t.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await t
        assert s.total_running == 0 and s.total_waiting == 0

    run(main())


def test_release_is_idempotent():
    async def main():
        s = sched()[0]
        a = await acquire(s, VIBE)
        a.release()
        a.release()
        assert s.total_running == 0 and s.counts(VIBE) == (0, 0)

    run(main())


def test_callback_tickets_for_jobs():
    async def main():
        s = sched()[0]
        hold = await acquire(s, QWEN)
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
        s = sched(make_config({"queue": {"globalMaxQueued": 200000}}))[0]
        hold = await acquire(s, QWEN)
        for i in range(100_000):
            s.enqueue(QWEN, ("low", "normal", "high")[i % 3], None, on_start=lambda slot: slot.release())
        assert s.total_waiting == 100_000
        hold.release()  # drains all: each callback releases at once
        assert s.total_waiting == 0 and s.total_running == 0

    run(main())


# ---- jobs, idle, cooldown, load batching ----------------------------------------------------------

class FakeEffects:
    """Records what the scheduler tells the model lifecycle; its one timer runs on the test's loop."""

    def __init__(self):
        self.deferred = []
        self.idle = []
        self.busy = []

    def call_later(self, delay, callback):
        return asyncio.get_running_loop().call_later(delay, callback)

    def load_deferred(self, model):
        self.deferred.append(model)

    def model_busy(self, model):
        self.busy.append(model)

    def model_idle(self, model):
        self.idle.append(model)


def sched(cfg=None, clock=None):
    s = Scheduler(cfg or make_config(), FakeEffects(), **({"clock": clock} if clock else {}))
    return s, s.effects


# qwen loaded with this much VRAM free: deepseek (4.4 GB with the reserve) does not fit beside it.
TIGHT_MB = 1000
ROOMY_MB = 15000


def test_callback_ticket_starts_at_once_on_a_free_model():
    async def main():
        s = sched()[0]
        started = []
        s.enqueue(VIBE, "normal", "u", on_start=started.append)
        assert len(started) == 1 and s.counts(VIBE) == (0, 1) and s.user_waiting == {}
        started[0].release()
        assert s.total_running == 0

    run(main())


def test_model_idle_is_reported_once_nothing_runs_or_waits():
    async def main():
        s, fx = sched()
        a = await acquire(s, QWEN)
        waiter = asyncio.create_task(acquire(s, QWEN))
        await asyncio.sleep(0)
        a.release()  # the waiter takes over: not idle
        b = await waiter
        assert fx.idle == []
        b.release()
        assert fx.idle == [QWEN]

    run(main())


def test_cooldown_shows_in_states_and_snapshot():
    async def main():
        clock = Clock()
        s = sched(make_config(), clock=clock)[0]
        s.set_cooldown(QWEN, 30.0)
        clock.t = 10.0
        entry = next(e for e in s.snapshot()["byModel"] if e["model"] == QWEN)
        assert entry["cooldown"] is True and entry["cooldownRemainingMs"] == 20000
        assert s.states[QWEN].cooldown
        s.set_cooldown(QWEN, None)
        assert not s.states[QWEN].cooldown and "cooldown" not in s.snapshot()["byModel"][1]

    run(main())


async def _busy_loaded_qwen(s, free_mb=TIGHT_MB):
    """qwen loaded, running, and with one request waiting: the model load batching protects."""
    s.set_loaded({QWEN: "100% gpu"}, free_mb)
    hold = await acquire(s, QWEN)
    waiter = asyncio.create_task(acquire(s, QWEN))
    await asyncio.sleep(0)
    return hold, waiter


def test_a_load_that_would_evict_waits_for_the_loaded_models_queue():
    async def main():
        s, fx = sched()
        hold, qwen_waiter = await _busy_loaded_qwen(s)
        order = []

        async def deepseek():
            slot = await acquire(s, DEEPSEEK)
            order.append(("deepseek", s.counts(QWEN)))
            slot.release()

        task = asyncio.create_task(deepseek())
        await asyncio.sleep(0)
        assert s.counts(DEEPSEEK) == (1, 0) and fx.deferred == [DEEPSEEK]
        hold.release()  # qwen's waiting request goes first, then nothing protects qwen any more
        second = await qwen_waiter
        await task
        assert order == [("deepseek", (0, 1))] and fx.deferred == [DEEPSEEK]
        second.release()
        assert s.total_running == 0 and s.total_waiting == 0

    run(main())


def test_a_load_that_fits_is_not_held_back():
    async def main():
        s, fx = sched()
        hold, qwen_waiter = await _busy_loaded_qwen(s, ROOMY_MB)  # deepseek fits beside qwen
        slot = s.try_acquire(DEEPSEEK)
        assert slot is not None and fx.deferred == []
        for x in (slot, hold):
            x.release()
        (await qwen_waiter).release()

    run(main())


def test_higher_priority_overrides_load_batching():
    async def main():
        s, fx = sched()
        hold, qwen_waiter = await _busy_loaded_qwen(s)
        slot = await asyncio.wait_for(acquire(s, DEEPSEEK, "high"), 1)
        assert fx.deferred == []
        for x in (slot, hold):
            x.release()
        (await qwen_waiter).release()

    run(main())


def test_age_overrides_load_batching_within_half_the_queue_budget():
    async def main():
        loop = asyncio.get_running_loop()
        s, fx = sched(make_config({"queue": {"agingMs": 60000}}), clock=loop.time)
        hold, qwen_waiter = await _busy_loaded_qwen(s)
        t0 = loop.time()
        # A sync waiter with a 0.4 s budget is held back at most half of it, then started by the wake timer.
        slot = await acquire(s, DEEPSEEK, max_wait=0.4)
        waited = loop.time() - t0
        assert fx.deferred == [DEEPSEEK] and 0.15 <= waited < 0.4
        assert s.counts(QWEN) == (1, 1)  # qwen's queue was still waiting: age won
        for x in (slot, hold):
            x.release()
        (await qwen_waiter).release()

    run(main())


def test_random_workload_never_exceeds_limits_and_ends_at_zero():
    import random

    async def main():
        cfg = make_config({"queue": {"globalMaxConcurrent": 3, "globalMaxQueued": 10_000, "perUserMaxQueued": 10_000}})
        s = sched(cfg)[0]
        specs = {m.name: m for m in cfg.models}
        rng = random.Random(7)
        held = []
        violations = []

        def check():
            if s.total_running > 3:
                violations.append(("global", s.total_running))
            for name, q in s.queues.items():
                limit = 1 if specs[name].exclusive else specs[name].max_concurrent
                if q.running > limit:
                    violations.append((name, q.running))

        def on_start(slot):
            held.append(slot)
            check()

        tickets = []
        for step in range(3000):
            action = rng.random()
            if action < 0.5:
                model = rng.choice(list(specs))
                tickets.append(s.enqueue(model, rng.choice(["low", "normal", "high"]), f"u{rng.randrange(4)}",
                                         on_start=on_start))
            elif action < 0.85 and held:
                held.pop(rng.randrange(len(held))).release()
            elif tickets:
                s.cancel(tickets.pop(rng.randrange(len(tickets))))
            check()
        for t in tickets:
            s.cancel(t)
        while held:
            held.pop().release()
        assert violations == []
        assert (s.total_running, s.total_waiting, s.user_waiting) == (0, 0, {})
        assert all(q.running == 0 and q.waiting == 0 for q in s.queues.values())

    run(main())
