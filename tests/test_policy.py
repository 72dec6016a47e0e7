"""The sync/async policy (spec §5.6 with its gpu_only bug fixed) and the queue-time limits, pure and live."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, chat_body, make_config, wait_for

from ollama_agent_router.options import normalize_meta
from ollama_agent_router.routing import ModelState, RoutingTable, RuntimeView, decide

CFG = make_config()
TABLE = RoutingTable(CFG)
CPU = ModelState(loaded=True, processor="100% cpu")


def meta(**kw):
    return normalize_meta(kw, CFG)


def test_router_mode_async_is_always_async():
    cfg = make_config({"router": {"defaultMode": "async"}})
    d = decide(normalize_meta({}, cfg), "simple_chat", "light", RoutingTable(cfg), RuntimeView(19000, 0))
    assert (d.action, d.model) == ("async", VIBE)


def test_heavy_load_threshold_is_inclusive_and_counts_waiting_only():
    assert decide(meta(), "simple_chat", "light", TABLE, RuntimeView(19000, 4)).action == "sync"
    assert decide(meta(), "simple_chat", "light", TABLE, RuntimeView(19000, 5)).action == "async"
    running = RuntimeView(19000, 0, {VIBE: ModelState(running=2), QWEN: ModelState(running=1)})
    assert decide(meta(), "simple_chat", "light", TABLE, running).action == "sync"


def test_heavy_load_from_free_vram():
    d = decide(meta(), "simple_chat", "light", TABLE, RuntimeView(1023, 0))
    assert d.action == "async" and d.heavy_load and d.reason == "Heavy load detected"
    assert decide(meta(), "simple_chat", "light", TABLE, RuntimeView(1024, 0)).action == "sync"
    assert decide(meta(allowAsync=False), "simple_chat", "light", TABLE, RuntimeView(10, 0)).action == "sync"


def test_heavy_load_async_skips_gpu_only_blocked_models():
    # The original sent this to candidates[0] (gpt-oss, running on the CPU) under heavy load.
    view = RuntimeView(19000, 9, {GPTOSS: CPU})
    d = decide(meta(requireGpuOnly=True), "agentic_reasoning", "heavy", TABLE, view)
    assert (d.action, d.model) == ("async", QWEN)
    all_blocked = RuntimeView(19000, 9, {GPTOSS: CPU, QWEN: CPU})
    d = decide(meta(requireGpuOnly=True), "agentic_reasoning", "heavy", TABLE, all_blocked)
    assert d.action == "reject" and d.model is None


def test_busy_top_model_goes_async_on_it_and_not_when_async_is_off():
    view = RuntimeView(19000, 0, {GPTOSS: ModelState(running=1)})
    d = decide(meta(), "agentic_reasoning", "heavy", TABLE, view)
    assert (d.action, d.model) == ("async", GPTOSS) and d.failover_order() == [QWEN]
    assert decide(meta(mode="sync"), "agentic_reasoning", "heavy", TABLE, view).model == QWEN


# ---- live --------------------------------------------------------------------------------------------

def hold(stack, model):
    slot = stack.run(lambda: stack.app.scheduler.try_acquire(model))
    assert slot is not None
    return slot


def test_heavy_load_switches_requests_to_jobs(stack_factory):
    stack = stack_factory({"router": {"heavyLoadQueueDepth": 2}})
    slot = hold(stack, GPTOSS)
    for _ in range(2):  # two jobs wait behind the held exclusive model
        r = stack.request("POST", "/v1/chat/completions", chat_body("Plan it", taskType="agentic_reasoning"))
        assert r.status == 202 and r.json()["router"]["preferredModel"] == GPTOSS
    assert stack.run(lambda: stack.app.scheduler.total_waiting) == 2
    r = stack.request("POST", "/v1/chat/completions", chat_body("Hello there", allowAsync=True))
    assert r.status == 202 and r.json()["router"]["decisionReason"] == "Heavy load detected"
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there", allowAsync=False)).status == 200
    # A plain client (no router object, no Prefer: respond-async) never gets a 202, heavy load or not.
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there")).status == 200
    stack.run(slot.release)
    wait_for(lambda: stack.run(lambda: stack.app.jobs.summary()["succeededRetained"]) == 3)


def test_a_sync_request_that_would_wait_too_long_becomes_a_job(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 200, "reply_tokens": 4})
    slot = hold(stack, DEEPSEEK)
    body = chat_body("Review this TypeScript code ```const x = 1```", maxQueueTimeMs=100,
                     preferredModels=[DEEPSEEK])
    r = stack.request("POST", "/v1/chat/completions", body)
    assert r.status == 202 and "100 ms" in r.json()["router"]["decisionReason"]
    job_id = r.json()["id"]
    assert stack.run(lambda: stack.app.scheduler.counts(DEEPSEEK)) == (1, 1)
    stack.run(slot.release)
    wait_for(lambda: stack.request("GET", f"/v1/jobs/{job_id}").json()["status"] == "succeeded")


def test_a_sync_request_that_would_wait_too_long_without_async_is_503(stack_factory):
    stack = stack_factory({"router": {"syncMaxQueueTimeMs": 80}})
    slot = hold(stack, DEEPSEEK)
    for router in ({"allowAsync": False}, {"mode": "sync"}):
        body = chat_body("Review this TypeScript code ```const x = 1```", preferredModels=[DEEPSEEK],
                         maxQueueTimeMs=80, **router)
        r = stack.request("POST", "/v1/chat/completions", body)
        assert r.status == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "queue_timeout" and "80 ms" in r.json()["error"]["message"]
    assert stack.run(lambda: stack.app.scheduler.counts(DEEPSEEK)) == (0, 1)
    stack.run(slot.release)


def test_sync_max_queue_time_does_not_cut_off_a_request_that_cannot_go_async(stack_factory):
    # syncMaxQueueTimeMs is when an async-capable request becomes a job; one that cannot go async waits on.
    stack = stack_factory({"router": {"syncMaxQueueTimeMs": 50}})
    slot = hold(stack, DEEPSEEK)
    body = chat_body("Review this TypeScript code ```const x = 1```", preferredModels=[DEEPSEEK], allowAsync=False)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(stack.request, "POST", "/v1/chat/completions", body)
        wait_for(lambda: stack.run(lambda: stack.app.scheduler.counts(DEEPSEEK)) == (1, 1))
        with pytest.raises(FutureTimeout):  # still waiting well past syncMaxQueueTimeMs
            future.result(0.3)
        stack.run(slot.release)
        assert future.result(10).status == 200
