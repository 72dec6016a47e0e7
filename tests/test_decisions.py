"""The pure decisions, driven with plain data and plain synchronous calls: no event loop, no sockets.

- failover: "this attempt ended like this: what next?" and the cooldown count;
- eviction: "to load this model, which loaded ones must go?";
- the scheduler's grant: "which waiting ticket starts next, and which loads are held back?", and the
  scheduler core itself, which runs without an event loop (its one timer is an effect).
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, make_config

from ollama_agent_router.eviction import DEMAND_FADE_S, Demand, Resident, evictions, free_vram, steered
from ollama_agent_router.failover import Cooldowns, Step, after_attempt
from ollama_agent_router.scheduler import Scheduler, Ticket, grant, hold_until, level


# ---- failover -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("outcome,status,has_next,step", [
    ("connect", 0, True, Step(retry=False, failed=False, ollama_down=True)),
    ("timeout", 0, True, Step(retry=False, failed=True, ollama_down=False)),
    ("closed", 0, True, Step(retry=True, failed=True, ollama_down=False)),
    ("closed", 0, False, Step(retry=False, failed=True, ollama_down=False)),
    ("ok", 503, True, Step(retry=True, failed=True, ollama_down=False)),
    ("ok", 500, False, Step(retry=False, failed=True, ollama_down=False)),
    ("ok", 501, True, Step(retry=False, failed=True, ollama_down=False)),
    ("ok", 404, True, Step(retry=False, failed=False, ollama_down=False)),
    ("ok", 200, True, Step(retry=False, failed=False, ollama_down=False)),
])
def test_after_attempt(outcome, status, has_next, step):
    assert after_attempt(outcome, status, has_next=has_next) == step


def test_cooldown_after_consecutive_failures_only():
    c = Cooldowns(threshold=3)
    assert [c.failed(QWEN), c.failed(QWEN)] == [False, False]
    c.succeeded(QWEN)  # a success in between starts the count again
    assert [c.failed(QWEN), c.failed(QWEN), c.failed(QWEN)] == [False, False, True]
    assert c.failures == {}  # the cooldown resets the count
    assert c.failed(VIBE) is False and c.failures == {VIBE: 1}


# ---- eviction -------------------------------------------------------------------------------------------
def test_a_model_that_fits_evicts_nothing():
    assert evictions(4000, [Resident(QWEN, 5000, 300, False)], 4000) == ()
    assert evictions(4000, [Resident(QWEN, 5000, 300, False)], None) == ()  # nothing known: no reason to hold


def test_eviction_order_is_ollamas_not_lru():
    resident = [Resident("a", 3000, 600, False), Resident("b", 3000, 300, False), Resident("c", 3000, 300, True),
                Resident("pinned", 3000, float("inf"), False)]
    # Shortest keep-alive first, idle before busy, then by name; only as many as needed.
    assert evictions(4000, resident, 2000) == ("b",)
    assert evictions(7000, resident, 2000) == ("b", "a")
    assert evictions(10000, resident, 2000) == ("b", "a", "pinned")
    assert evictions(99999, resident, 2000) == ("b", "a", "pinned", "c")  # all go: the model loads partly on CPU


def test_free_vram_without_a_reading_is_the_configured_total_minus_the_loaded():
    resident = [Resident("a", 3000, 0, False)]
    assert free_vram(1234.0, 20000, resident) == 1234.0
    assert free_vram(None, 20000, resident) == 17000
    assert free_vram(None, 0, resident) is None


def test_steered_evictions_go_by_demand_and_wait_for_a_busy_model():
    hot, cold = Resident(VIBE, 3000, 300, False, demand=30.0), Resident(QWEN, 3000, 300, False, demand=2.0)
    assert steered(4000, [hot, cold], 2000) == ((QWEN,), False)  # Ollama's order would drop vibe (by name)
    assert evictions(4000, [hot, cold], 2000) == (VIBE,)
    queued = cold._replace(waiting=True)  # requests waiting for it: it goes last, whatever its demand
    assert steered(4000, [hot, queued], 2000) == ((VIBE,), False)
    assert steered(7000, [hot, cold], 2000) == ((QWEN, VIBE), False)
    assert steered(1000, [hot, cold], 2000) == ((), False)  # it fits
    assert steered(4000, [hot, cold], None) == ((), False)  # nothing known about memory
    assert steered(99999, [hot, cold], 2000) == ((), False)  # too big for the card: Ollama splits it
    # The least wanted model is busy: wait for it; if the wait runs out, unload idle ones that make room alone.
    busy = cold._replace(busy=True)
    assert steered(4000, [hot, busy], 2000) == ((VIBE,), True)
    assert steered(7000, [hot, busy], 2000) == ((), True)  # the idle ones are too few: leave it to Ollama


def test_demand_counts_starts_and_fades():
    d = Demand()
    d.count(VIBE, 0.0)
    d.count(VIBE, 0.0)
    d.count(QWEN, 0.0)
    assert (d.of(VIBE, 0.0), d.of(QWEN, 0.0), d.of(GPTOSS, 0.0)) == (2.0, 1.0, 0.0)
    assert d.of(VIBE, DEMAND_FADE_S) == pytest.approx(2.0 / 2.718281828, rel=1e-6)
    d.count(VIBE, DEMAND_FADE_S)
    assert d.of(VIBE, DEMAND_FADE_S) == pytest.approx(1.0 + 2.0 / 2.718281828, rel=1e-6)


# ---- the grant ------------------------------------------------------------------------------------------
def ticket(model, lane, seq, enqueued=0.0, deadline=None):
    return Ticket(model, lane, seq, enqueued, None, lambda slot: None, deadline=deadline)


def never(model):
    return False


def test_grant_prefers_priority_then_age():
    normal_old, high_new = ticket(QWEN, 1, 1), ticket(VIBE, 2, 2)
    assert grant([normal_old, high_new], 0.0, 10.0, -1, set(), never) == (high_new, [])
    # Two aging steps later the old normal ticket counts as high, and it is older.
    assert level(normal_old, 20.0, 10.0) == 2
    assert grant([normal_old, high_new], 20.0, 10.0, -1, set(), never) == (normal_old, [])


def test_a_load_that_would_evict_is_held_until_its_patience_runs_out():
    t = ticket(DEEPSEEK, 1, 5, enqueued=100.0)

    def evicts(model):
        return model == DEEPSEEK

    # A loaded model has normal-priority requests waiting (protected lane 1): hold, for one aging step.
    assert hold_until(t, 101.0, 10.0, 1, {QWEN}, evicts) == 110.0
    assert grant([t], 101.0, 10.0, 1, {QWEN}, evicts) == (None, [(t, 110.0)])
    assert hold_until(t, 110.0, 10.0, 1, {QWEN}, evicts) is None  # patience ran out
    # A sync waiter with a 4 s budget waits at most half of it.
    assert hold_until(ticket(DEEPSEEK, 1, 6, 100.0, deadline=104.0), 101.0, 10.0, 1, {QWEN}, evicts) == 102.0
    # Higher priority than the protected queue, a model that fits, or one already loaded: no hold.
    assert hold_until(ticket(DEEPSEEK, 2, 7, 100.0), 101.0, 10.0, 1, {QWEN}, evicts) is None
    assert hold_until(t, 101.0, 10.0, 1, {QWEN}, never) is None
    assert hold_until(t, 101.0, 10.0, 1, {QWEN, DEEPSEEK}, evicts) is None
    assert hold_until(t, 101.0, 10.0, -1, {QWEN}, evicts) is None


def test_a_held_head_gives_way_to_the_next_best():
    held, other = ticket(DEEPSEEK, 2, 1, 0.0), ticket(VIBE, 1, 2, 0.0)
    chosen, holds = grant([held, other], 1.0, 10.0, 2, {QWEN}, lambda m: m == DEEPSEEK)
    assert chosen is other and holds == [(held, 10.0)]


class RecordingEffects:
    """Effects with no event loop: the timer is only recorded, and fired by hand."""

    def __init__(self):
        self.timers = []
        self.events = []

    def call_later(self, delay, callback):
        self.timers.append((delay, callback))
        return self

    def cancel(self):
        pass

    def load_deferred(self, model):
        self.events.append(("deferred", model))

    def model_busy(self, model):
        self.events.append(("busy", model))

    def model_idle(self, model):
        self.events.append(("idle", model))


def test_the_scheduler_core_runs_on_plain_calls():
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # no event loop anywhere in this test
    now = [0.0]
    fx = RecordingEffects()
    s = Scheduler(make_config({"queue": {"agingMs": 10000}}), fx, clock=lambda: now[0])
    started = []
    s.set_loaded({QWEN: "100% gpu"}, 1000.0)  # deepseek does not fit beside qwen
    s.enqueue(QWEN, "normal", "a", started.append)
    s.enqueue(QWEN, "normal", "b", started.append)  # waits: qwen runs one at a time
    s.enqueue(DEEPSEEK, "normal", "c", started.append)  # held back: loading it would evict qwen
    assert [x.model for x in started] == [QWEN] and s.counts(DEEPSEEK) == (1, 0)
    assert ("deferred", DEEPSEEK) in fx.events and fx.timers[-1][0] == 10.0
    started[0].release()  # qwen's waiting request goes first; then no queue protects qwen, and deepseek starts
    assert [x.model for x in started] == [QWEN, QWEN, DEEPSEEK]
    for slot in started:
        slot.release()
    assert ("idle", QWEN) in fx.events and fx.events[-1] == ("idle", DEEPSEEK)
    assert (s.total_running, s.total_waiting) == (0, 0)


def test_the_wake_timer_starts_a_held_load_when_patience_runs_out():
    now = [0.0]
    fx = RecordingEffects()
    s = Scheduler(make_config({"queue": {"agingMs": 10000}}), fx, clock=lambda: now[0])
    started = []
    s.set_loaded({QWEN: "100% gpu"}, 1000.0)
    s.enqueue(QWEN, "normal", "a", started.append)
    s.enqueue(QWEN, "normal", "b", started.append)
    s.enqueue(GPTOSS, "normal", "c", started.append)
    assert [x.model for x in started] == [QWEN]
    now[0] = 10.0
    fx.timers[-1][1]()  # the timer fires
    assert [x.model for x in started] == [QWEN, GPTOSS]


def test_without_load_batching_or_aging_the_scheduler_is_first_come_first_served_per_priority():
    now = [0.0]
    fx = RecordingEffects()
    cfg = make_config({"queue": {"agingMs": 0, "loadBatching": False, "globalMaxConcurrent": 2}})
    s = Scheduler(cfg, fx, clock=lambda: now[0])
    started = []
    s.set_loaded({QWEN: "100% gpu"}, 1000.0)  # deepseek does not fit beside qwen
    s.enqueue(QWEN, "normal", "a", started.append)
    s.enqueue(QWEN, "normal", "b", started.append)
    s.enqueue(DEEPSEEK, "normal", "c", started.append)  # not held back: it starts, and Ollama will evict
    assert [x.model for x in started] == [QWEN, DEEPSEEK]
    assert fx.timers == [] and not any(kind == "deferred" for kind, _ in fx.events)
    s.enqueue(VIBE, "low", "d", started.append)  # the global cap (2) is reached: both wait
    now[0] = 3600.0  # an hour later the low ticket has not moved up
    s.enqueue(VIBE, "normal", "e", started.append)
    started[0].release()
    started[1].release()
    assert [x.user for x in started[2:]] == ["b", "e"]  # b came first; e outranks the older low d


def test_without_aging_a_ticket_keeps_its_lane_and_a_held_load_waits_for_the_queue_it_would_evict():
    old_low, new_normal = ticket(QWEN, 0, 1, 0.0), ticket(VIBE, 1, 2, 0.0)
    assert level(old_low, 1e9, float("inf")) == 0
    assert grant([old_low, new_normal], 1e9, float("inf"), -1, set(), never) == (new_normal, [])
    t = ticket(DEEPSEEK, 1, 5, enqueued=100.0)
    assert hold_until(t, 1e9, float("inf"), 1, {QWEN}, lambda m: True) == float("inf")  # no budget: no timer
    assert hold_until(ticket(DEEPSEEK, 1, 6, 100.0, deadline=104.0), 101.0, float("inf"), 1, {QWEN},
                      lambda m: True) == 102.0  # half its budget still applies


def test_a_load_that_needs_a_busy_model_is_held_for_half_its_budget():
    t = ticket(GPTOSS, 1, 1, enqueued=100.0, deadline=200.0)
    needs = lambda m: m == GPTOSS  # noqa: E731

    assert hold_until(t, 101.0, 10.0, -1, {QWEN}, never, needs) == 150.0  # not one aging step: half its budget
    assert hold_until(t, 150.0, 10.0, -1, {QWEN}, never, needs) is None
    assert hold_until(t, 101.0, 10.0, -1, {QWEN}, never) is None  # steering off
    assert hold_until(ticket(GPTOSS, 1, 2, 100.0), 105.0, 10.0, -1, {QWEN}, never, needs) == 110.0  # no budget
    assert hold_until(ticket(GPTOSS, 1, 3, 100.0), 105.0, float("inf"), -1, {QWEN}, never, needs) == float("inf")


def test_the_steering_scheduler_unloads_the_least_wanted_model_and_waits_for_a_busy_one():
    now = [0.0]
    fx = RecordingEffects()
    s = Scheduler(make_config({"queue": {"steerEvictions": True}}), fx, clock=lambda: now[0])
    # vibe (4,198 MB counted) and qwen (5,325 MB) are loaded; gpt-oss (14,848 MB) needs one of them gone.
    s.set_loaded({VIBE: "100% gpu", QWEN: "100% gpu"}, 10957.0)
    started = []
    for _ in range(3):
        s.enqueue(VIBE, "normal", None, started.append)
        started[-1].release()
    s.enqueue(QWEN, "normal", None, started.append)  # qwen runs now: it is busy
    s.enqueue(GPTOSS, "normal", None, started.append)
    assert [x.model for x in started] == [VIBE] * 3 + [QWEN]  # held: qwen is the one to go, and it is busy
    assert ("deferred", GPTOSS) in fx.events
    started[-1].release()
    assert started[-1].model == GPTOSS and started[-1].unload == (QWEN,)  # not vibe, the model in demand
    assert not s.is_loaded(QWEN) and s.is_loaded(GPTOSS) and s.is_loaded(VIBE)  # counted at once
