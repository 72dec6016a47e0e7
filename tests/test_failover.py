"""Failover to the next candidate, cooldown, model limits at the simulator, and slots freed on every path."""

from __future__ import annotations

import json
import socket

import openai
import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, chat_body, wait_for

from ollama_agent_router.simulator.run import Fault

CODE = "Write a TypeScript function to parse JSON"  # code_generate: qwen first, deepseek next


def chat_calls(stack):
    return [c["model"] for c in stack.chat_calls()]


def sync(stack, content=CODE, **router):
    router.setdefault("allowAsync", False)
    return stack.request("POST", "/v1/chat/completions", chat_body(content, **router))


@pytest.mark.parametrize("status", [500, 503])
def test_a_failing_model_fails_over_to_the_next_candidate(stack, status):
    stack.run(lambda: stack.sim.inject(QWEN, Fault(status=status, message="model runner crashed")))
    r = sync(stack)
    assert r.status == 200, r
    router = r.json()["router"]
    assert router["selectedModel"] == DEEPSEEK and chat_calls(stack) == [QWEN, DEEPSEEK]
    assert router["attempts"] == [{"model": QWEN, "outcome": f"http_{status}", "detail": "model runner crashed"},
                                  {"model": DEEPSEEK, "outcome": "ok"}]
    assert router["decisionReason"].startswith(f"Failed over to {DEEPSEEK} after {QWEN} (http_{status}); originally: ")
    assert r.headers["x-router-selected-model"] == DEEPSEEK
    metrics = stack.request("GET", "/metrics").body.decode()
    assert f'oar_failovers_total{{from_model="{QWEN}",to_model="{DEEPSEEK}"}} 1' in metrics


def test_a_4xx_is_never_retried(stack):
    stack.run(lambda: stack.sim.inject(QWEN, Fault(status=400, message="invalid tool call arguments")))
    r = sync(stack)
    assert r.status == 400 and chat_calls(stack) == [QWEN]


def test_failover_max_attempts_caps_the_tries(stack):
    stack.run(lambda: stack.sim.inject("*", Fault(status=503, times=None)))
    r = sync(stack, preferredModels=[QWEN, DEEPSEEK, VIBE])
    assert r.status == 503 and r.headers["retry-after"]
    err = r.json()["error"]
    assert err["code"] == "upstream_busy" and [a["model"] for a in err["attempts"]] == [QWEN, DEEPSEEK]
    assert chat_calls(stack) == [QWEN, DEEPSEEK]  # router.failover.maxAttempts defaults to 2


def test_a_stream_fails_over_before_its_first_byte_only(stack):
    client = stack.openai()
    stack.run(lambda: stack.sim.inject(VIBE, Fault(status=503)))
    chunks = list(client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}],
                                                 stream=True))
    assert chunks and chunks[0].model == QWEN and chat_calls(stack) == [VIBE, QWEN]
    stack.run(lambda: stack.sim.inject(VIBE, Fault(drop_after_chunks=2)))
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}],
                                                stream=True):
            pass
    assert chat_calls(stack) == [VIBE, QWEN, VIBE]  # streaming had started: no second try
    wait_for(lambda: stack.run(lambda: stack.app.scheduler.total_running) == 0)


def test_cooldown_after_consecutive_failures(stack_factory):
    stack = stack_factory({"router": {"failover": {"cooldownFailures": 2, "cooldownMs": 600}}})
    stack.run(lambda: stack.sim.inject(QWEN, Fault(status=503, times=2)))
    for _ in range(2):
        assert sync(stack).json()["router"]["selectedModel"] == DEEPSEEK
    status = stack.request("GET", "/v1/router/status").json()
    entry = next(e for e in status["queue"]["byModel"] if e["model"] == QWEN)
    assert entry["cooldown"] is True and 0 < entry["cooldownRemainingMs"] <= 600
    r = sync(stack)
    router = r.json()["router"]
    assert router["selectedModel"] == DEEPSEEK and f"{QWEN} (cooldown)" in router["decisionReason"]
    assert chat_calls(stack) == [QWEN, DEEPSEEK, QWEN, DEEPSEEK, DEEPSEEK]  # skipped while cooling down
    metrics = stack.request("GET", "/metrics").body.decode()
    assert f'oar_model_cooldowns_total{{model="{QWEN}"}} 1' in metrics
    wait_for(lambda: "cooldown" not in stack.request("GET", "/v1/router/status").json()["queue"]["byModel"][1])
    assert sync(stack, preferredModels=[QWEN]).json()["router"]["selectedModel"] == QWEN


def test_connection_refused_is_503_and_does_not_cool_models_down(stack_factory):
    stack = stack_factory({"router": {"failover": {"cooldownFailures": 1}}})
    async def down():
        await stack.sim.set_down(True)

    stack.call(down())
    r = sync(stack)
    assert r.status == 503 and r.json()["error"]["code"] == "ollama_unreachable"
    assert "Ollama is unreachable" in r.json()["error"]["message"]
    assert not any(s.cooldown for s in stack.run(lambda: list(stack.app.scheduler.states.values())))


def test_model_limits_hold_at_the_simulator(stack_factory):
    # The simulator would run 4 requests per model at once; the router must keep to each model's limit.
    stack = stack_factory({"queue": {"globalMaxQueued": 100, "perUserMaxQueued": 100}},
                          sim_kw={"num_parallel": 4, "tokens_per_second": 100, "reply_tokens": 6,
                                  "gpu_total_mb": 81920})
    jobs = stack.app.jobs
    plan = [(VIBE, "simple_chat")] * 8 + [(GPTOSS, "agentic_reasoning")] * 3 + [(QWEN, "code_generate")] * 3
    ids = stack.run(lambda: [jobs.submit({"messages": [{"role": "user", "content": "x"}]}, model, task, "normal",
                                         None)[0].id for model, task in plan])
    wait_for(lambda: stack.run(lambda: all(jobs.jobs[i].status == "succeeded" for i in ids)), timeout=20)
    assert stack.sim.peak_concurrency == {VIBE: 2, GPTOSS: 1, QWEN: 1}


def test_slots_are_released_on_every_path(stack_factory):
    stack = stack_factory({"models": [dict(m, timeoutMs=400) for m in __import__("conftest").TEST_CONFIG["models"]]},
                          sim_kw={"tokens_per_second": 50, "reply_tokens": 100})
    sched = stack.app.scheduler

    def idle():
        return stack.run(lambda: (sched.total_running, sched.total_waiting,
                                  [(q.waiting, q.running) for q in sched.queues.values()]))

    zero = (0, 0, [(0, 0)] * 4)
    stack.run(lambda: setattr(stack.sim, "reply_tokens", 2))
    assert sync(stack, "Hello there").status == 200  # success
    stack.run(lambda: stack.sim.inject("*", Fault(status=500, times=2)))
    assert sync(stack, "Hello there").status == 502  # upstream error (after a failover)
    stack.run(lambda: stack.sim.inject(VIBE, Fault(first_byte_delay_s=2)))
    assert sync(stack, "Hello there").status == 504  # timeout
    assert idle() == zero
    stack.run(lambda: setattr(stack.sim, "reply_tokens", 100))
    sock = socket.create_connection(("127.0.0.1", stack.port))  # client disconnect mid-stream
    body = json.dumps(dict(chat_body("Hello there"), stream=True)).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()
    wait_for(lambda: stack.sim.cancelled >= 1)
    wait_for(lambda: idle() == zero)
    job_id = stack.request("POST", "/v1/chat/completions", chat_body("Hello there", mode="async")).json()["id"]
    wait_for(lambda: stack.sim.in_flight.get(VIBE, 0) == 1)
    stack.request("DELETE", f"/v1/jobs/{job_id}")  # cancel a running job
    wait_for(lambda: stack.sim.cancelled >= 2)
    gpt = stack.run(lambda: sched.try_acquire(GPTOSS))  # a sync waiter that gives up (maxQueueTimeMs)
    r = sync(stack, "Plan it", taskType="agentic_reasoning", preferredModels=[GPTOSS], forbiddenModels=[QWEN],
             maxQueueTimeMs=50, mode="sync")
    assert r.status == 503
    stack.run(gpt.release)
    wait_for(lambda: idle() == zero)
