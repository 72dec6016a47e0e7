"""The simulator's own accounting (loads, seconds generating, loading and idle, the residency timeline) and
its per-model generation rates and shared GPU, which the workload benchmark relies on."""

from __future__ import annotations

from types import SimpleNamespace

from sim_support import CODER, models, oai, run, running

from ollama_agent_router.simulator.activity import Activity
from ollama_agent_router.simulator.run import Executor, SimModel


def test_activity_books_each_moment_to_generating_else_loading_else_idle():
    now = [0.0]
    a = Activity(record=True, clock=lambda: now[0])
    now[0] = 2.0
    a.load_started("big")
    now[0] = 5.0
    a.slots_busy("small", 1)  # generating while "big" loads: the moment counts as generating
    now[0] = 6.0
    a.load_ended("big", 4.0)
    now[0] = 7.0
    a.slots_busy("small", 0)
    a.slots_busy("small", 0)  # no change, no event
    now[0] = 10.0
    a.unloaded("big")
    assert a.totals() == {"generating": 2.0, "loading": 3.0, "idle": 5.0, "loads": 1, "load_seconds": 4.0}
    assert a.timeline == [(2.0, "big", "loading"), (5.0, "small", "busy"), (6.0, "big", "loaded"),
                          (7.0, "small", "loaded"), (10.0, "big", "gone")]
    assert Activity().timeline is None  # not recorded unless asked: a long-running simulator must not grow


def test_a_shared_gpu_splits_its_time_between_the_requests_generating():
    sched = SimpleNamespace(generating=lambda: 3)
    shared = Executor(sched, num_parallel=1, load_seconds_per_gb=0, tokens_per_second=10, shared_gpu=True)
    alone = Executor(sched, num_parallel=1, load_seconds_per_gb=0, tokens_per_second=10)
    assert (shared._share(0.5), alone._share(0.5)) == (1.5, 0.5)


def test_a_model_generates_at_its_own_rate_and_its_load_is_accounted():
    fast = [SimModel(CODER, 0.5, tokens_per_second=100.0)] + models()[1:]

    async def go() -> None:
        # No global rate: without the model's own rate there would be no pacing at all.
        async with running(fast, load_seconds_per_gb=0.2) as sim:
            async with oai(sim) as client:
                reply = await client.chat.completions.create(
                    model=CODER, messages=[{"role": "user", "content": "ECHO: " + "x" * 20}])
            totals = sim.activity.totals()
        assert reply.usage.completion_tokens == 8  # the simulator's default reply_tokens
        assert totals["loads"] == 1 and totals["load_seconds"] >= 0.1  # 0.5 GB at 0.2 s per GB
        assert totals["generating"] >= 8 / 100  # its tokens were paced at its own 100 per second
    run(go())
