"""Model lifecycle against the simulator: keep-alive refreshes, pinned and prewarmed models, load batching."""

from __future__ import annotations

import http.client
import json

from conftest import DEEPSEEK, QWEN, TEST_CONFIG, VIBE, chat_body, wait_for

from ollama_agent_router.residency import keep_alive_value


def unload(stack, model):
    """What `ollama stop` does, straight to the simulator; then wait until the router's snapshot agrees."""
    conn = http.client.HTTPConnection("127.0.0.1", stack.sim.port, timeout=10)
    conn.request("POST", "/api/generate", json.dumps({"model": model, "keep_alive": 0}),
                 {"content-type": "application/json"})
    assert conn.getresponse().status == 200
    conn.close()
    wait_for(lambda: not stack.run(lambda: stack.app.scheduler.is_loaded(model)))


def set_refresh_delay(stack, seconds):
    stack.run(lambda: setattr(stack.app.residency, "refresh_delay", seconds))


def test_keep_alive_value():
    assert keep_alive_value("10m") == "10m" and keep_alive_value("-1") == -1 and keep_alive_value(" 300 ") == 300


def test_keep_alive_reaches_ollama_once_per_burst(stack_factory):
    stack = stack_factory({"ollama": {"keepAlive": "10m"}})
    set_refresh_delay(stack, 0.5)
    for _ in range(3):
        assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there")).status == 200
    assert stack.sim.loaded()[VIBE]["keep_alive"] == 300  # the /v1 requests got Ollama's default
    wait_for(lambda: stack.sim.keep_alive_refreshes)
    wait_for(lambda: not stack.run(lambda: stack.app.residency.pending_refreshes))
    assert stack.sim.keep_alive_refreshes == [(VIBE, "10m")]
    assert stack.sim.loaded()[VIBE]["keep_alive"] == 600
    metrics = stack.request("GET", "/metrics").body.decode()
    assert f'oar_keep_alive_refreshes_total{{model="{VIBE}"}} 1' in metrics


def test_no_refresh_brings_back_a_model_ollama_unloaded(stack_factory):
    stack = stack_factory({"ollama": {"keepAlive": "10m"}})
    set_refresh_delay(stack, 60)
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there")).status == 200
    unload(stack, VIBE)
    loads = list(stack.sim.loads)
    set_refresh_delay(stack, 0.01)
    stack.run(lambda: stack.app.residency.model_idle(VIBE))
    wait_for(lambda: not stack.run(lambda: stack.app.residency.pending_refreshes))
    assert stack.sim.loads == loads and VIBE not in stack.sim.loaded()
    assert stack.sim.keep_alive_refreshes == [(VIBE, "0")]  # only the test's own unload


def test_pinned_and_prewarmed_models(stack_factory):
    models = [dict(m, pinned=m["name"] == VIBE, prewarm=m["name"] == DEEPSEEK) for m in TEST_CONFIG["models"]]
    stack = stack_factory({"models": models})
    # A refresh is recorded when it arrives, a load when it completes: wait for both.
    wait_for(lambda: len(stack.sim.keep_alive_refreshes) == 2 and len(stack.sim.loads) == 2)
    assert sorted(stack.sim.keep_alive_refreshes) == sorted([(VIBE, "-1"), (DEEPSEEK, "5m")])
    assert sorted(stack.sim.loads) == sorted([VIBE, DEEPSEEK])
    assert stack.sim.loaded()[VIBE]["keep_alive"] is None  # forever
    set_refresh_delay(stack, 0.01)
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there")).status == 200
    wait_for(lambda: len(stack.sim.keep_alive_refreshes) == 3)  # the /v1 request reset it; pinned again
    assert stack.sim.keep_alive_refreshes[-1] == (VIBE, "-1")
    wait_for(lambda: stack.sim.loaded()[VIBE]["keep_alive"] is None)
    unload(stack, VIBE)
    stack.run(stack.app.residency.check_pinned)
    wait_for(lambda: stack.sim.loads.count(VIBE) == 2)
    wait_for(lambda: VIBE in stack.sim.loaded())


def test_a_loaded_models_queue_is_served_before_a_load_that_would_evict_it(stack_factory):
    # 8 GB of VRAM: qwen (5.4 GB loaded) and deepseek (4.4 GB) do not fit together.
    stack = stack_factory({"gpu": {"vramTotalMb": 8192}}, sim_kw={"tokens_per_second": 40, "reply_tokens": 16})
    jobs = stack.app.jobs

    def submit(model):
        return stack.run(lambda: jobs.submit({"messages": [{"role": "user", "content": "x"}]}, model, "code_generate",
                                             "normal", None)[0].id)

    first = submit(QWEN)
    wait_for(lambda: stack.sim.in_flight.get(QWEN, 0) == 1)
    wait_for(lambda: stack.run(lambda: stack.app.scheduler.is_loaded(QWEN)
                               and stack.app.scheduler.would_evict(DEEPSEEK)))
    second = submit(QWEN)
    third = submit(DEEPSEEK)
    assert stack.run(lambda: [jobs.jobs[i].status for i in (first, second, third)]) == ["running", "queued", "queued"]
    wait_for(lambda: stack.run(lambda: all(jobs.jobs[i].status == "succeeded" for i in (first, second, third))),
             timeout=10)
    order = [c["model"] for c in stack.chat_calls()]
    assert order == [QWEN, QWEN, DEEPSEEK]
    metrics = stack.request("GET", "/metrics").body.decode()
    assert f'oar_model_loads_avoided_total{{model="{DEEPSEEK}"}} 1' in metrics


def test_steered_evictions_keep_the_model_in_demand(stack_factory):
    # 12 GB: vibe (3.9 GB loaded) and deepseek (4.1 GB) fit together; qwen (5 GB) fits beside one of them.
    def run(steer):
        stack = stack_factory({"gpu": {"vramTotalMb": 12288}, "queue": {"steerEvictions": steer}})
        for model in (VIBE, VIBE, VIBE, DEEPSEEK):
            assert stack.request("POST", "/v1/chat/completions", dict(chat_body("Hi"), model=model)).status == 200
        wait_for(lambda: stack.run(lambda: stack.app.scheduler.is_loaded(DEEPSEEK)))
        assert stack.request("POST", "/v1/chat/completions", dict(chat_body("Hi"), model=QWEN)).status == 200
        return sorted(stack.sim.loaded()), stack.sim.keep_alive_refreshes

    # Ollama, left to itself, unloads by keep-alive and then name: vibe goes, though it is the one in demand.
    assert run(False) == (sorted([DEEPSEEK, QWEN]), [])
    # Steered, the router unloads deepseek itself before it sends the qwen request.
    assert run(True) == (sorted([VIBE, QWEN]), [(DEEPSEEK, "0")])
