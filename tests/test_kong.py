"""The Kong runtime-agent contract (spec Part C), replayed the way the plugin calls a node, over real HTTP.

``Kong`` joins a node base URL (which may carry our basePath) with the path as the plugin does, sends
``content-type`` and ``accept: application/json`` on every call, bodiless GET and DELETE included, and
puts credentials in one of the plugin's header forms. The assertions read the fields the plugin reads.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from access_support import LOCKED, access, api_key, plane, secret
from conftest import DEEPSEEK, GPTOSS, QWEN, TEST_CONFIG, VIBE, Reply, assert_no_null, chat_body, wait_for

from ollama_agent_router.gpu import GpuUnavailable
from ollama_agent_router.simulator.run import Fault
from ollama_agent_router.simulator.server import SimulatedGpu
from ollama_agent_router.snapshot import processor_text
from ollama_agent_router.waiting import acquire

KONG_AUTH_FORMS = {
    "none": {},
    "bearer": {"authorization": "Bearer kong-runtime-token"},
    "header": {"x-api-key": "kong-runtime-token"},
}


class Kong:
    def __init__(self, base_url: str, auth: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.auth = auth or {}

    def call(self, method: str, path: str, body: Any = None, *, zero_length: bool = False) -> Reply:
        # The plugin: trailing slashes stripped from base_url, a leading "/" ensured on the path.
        url = self.base_url.rstrip("/") + (path if path.startswith("/") else "/" + path)
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        headers = {"content-type": "application/json", "accept": "application/json", **self.auth}
        data = json.dumps(body).encode() if body is not None else (b"" if zero_length else None)
        conn.request(method, parts.path, body=data, headers=headers)
        resp = conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        conn.close()
        return reply


def kong_for(stack, auth: str = "none") -> Kong:
    return Kong(stack.url + "/", KONG_AUTH_FORMS[auth])


def ollama_down(stack) -> None:
    async def down() -> None:
        await stack.sim.set_down(True)

    stack.call(down())
    wait_for(lambda: not stack.app.snapshot.ollama_reachable)


def execute_body(model: str, content: str, **extra: Any) -> dict:
    """What Kong 0.1.4 sends to execute (C.6): the client's body with `model` set, and its decision."""
    request = {"model": model, "messages": [{"role": "user", "content": content}], **extra.pop("request", {})}
    body = {"selectedModel": model, "request": request, "priority": "normal",
            "routerDecision": {"taskType": "code_review", "score": 250.5,
                               "reason": f"Selected {model} on test-node for code_review with score 250.5",
                               "priority": "normal"}}
    body.update(extra)
    return body


def check_error(reply: Reply, status: int, message: str | None = None) -> dict:
    assert reply.status == status, reply
    body = reply.json()
    assert_no_null(body)
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if message is not None:
        assert body["error"]["message"] == message
    return body["error"]


# ---- the plugin's smoke test (C.11), secure variant's node config ----------------------------------------

def test_c11_smoke_sync_chat_through_kong(stack_factory):
    smoke = {**TEST_CONFIG["models"][0], "tags": ["smoke"]}  # one model, with the extra key the smoke config has
    stack = stack_factory({"gpu": {"provider": "none"}, "models": [smoke],
                           "routes": {task: [VIBE] for task in TEST_CONFIG["routes"]}}, simulated_gpu=False)
    kong = kong_for(stack, "bearer")
    caps = kong.call("GET", "/v1/router/capabilities").json()
    assert {"nodeId", "status", "version"} <= set(caps) and [m["name"] for m in caps["models"]] == [VIBE]
    router = {"mode": "sync", "preferredModels": [VIBE], "maxExecutionTimeMs": 180000}
    body = execute_body(VIBE, "Reply with exactly OK. ECHO: OK", request={"router": router})
    reply = kong.call("POST", "/v1/router/execute", body)
    assert reply.status == 200 and reply.json()["result"]["choices"][0]["message"]["content"] == "OK"
    assert "gpu" not in kong.call("GET", "/v1/router/runtime").json()


def test_c11_secure_variant_auth(stack_factory):
    """scripts/smoke-secure-runtime.sh: standalone off, runtimeAgent key-only, one runtimeAgent key."""
    stack = stack_factory(access(standalone=plane(enabled=False), runtime=LOCKED,
                                 keys=[api_key("rt", ["runtimeAgent"]), api_key("std", ["standalone"])]))
    anonymous = Kong(stack.url).call("GET", "/v1/router/capabilities")
    check_error(anonymous, 401)
    assert "api key" in anonymous.json()["error"]["message"].lower()  # Kong: "node-router authentication failed"
    wrong = Kong(stack.url, {"x-api-key": secret("std")}).call("GET", "/v1/router/runtime")
    check_error(wrong, 403)
    assert "api key" in wrong.json()["error"]["message"].lower()
    check_error(stack.request("POST", "/v1/chat/completions", chat_body("hi")), 404)
    for form in ({"authorization": f"Bearer {secret('rt')}"}, {"x-api-key": secret("rt")}):
        kong = Kong(stack.url + "/", form)
        assert kong.call("GET", "/v1/router/capabilities").status == 200
        assert kong.call("GET", "/v1/router/runtime").status == 200
        assert kong.call("POST", "/v1/router/execute", execute_body(VIBE, "ECHO: OK")).status == 200
        assert kong.call("POST", "/v1/router/route", chat_body("hi")).status == 200
        job = kong.call("POST", "/v1/router/jobs", execute_body(VIBE, "x"))
        assert job.status == 202
        assert kong.call("GET", f"/v1/jobs/{job.json()['id']}", zero_length=True).status == 200
        assert kong.call("DELETE", f"/v1/jobs/{job.json()['id']}", zero_length=True).status == 200


# ---- capabilities (C.4) -------------------------------------------------------------------------------

def test_capabilities_contract_under_a_base_path(stack_factory):
    models = [dict(m) for m in TEST_CONFIG["models"]]
    models[1]["tags"] = ["planning", "tool_use"]  # the secure smoke config's extra key: accepted and exposed
    stack = stack_factory({"server": {"basePath": "/ollama-router"}, "models": models})
    reply = kong_for(stack, "bearer").call("GET", "v1/router/capabilities")
    assert reply.status == 200, reply
    caps = reply.json()
    assert_no_null(caps)
    assert caps["nodeId"] == "test-node" and caps["status"] == "ok" and isinstance(caps["version"], str)
    router = caps["router"]
    assert (router["defaultMode"], router["syncMaxQueueTimeMs"], router["heavyLoadQueueDepth"],
            router["heavyLoadGpuFreeMbThreshold"], router["defaultTaskType"]) == ("auto", 5000, 5, 1024, "unknown")
    assert router["classification"] == {**router["classification"], "mode": "heuristic", "classifierTimeoutMs": 1000}
    assert caps["gpu"] == {"requireGpuOnlyByDefault": False, "vramSafetyReserveMb": 512}
    assert caps["queue"] == {"defaultPriority": "normal", "timeoutMs": 10000}
    assert [m["name"] for m in caps["models"]] == [VIBE, QWEN, DEEPSEEK, GPTOSS]
    gptoss = caps["models"][3]
    assert gptoss["sizeGb"] == 14 and isinstance(gptoss["sizeGb"], int)  # JavaScript prints 14, not 14.0
    for m in caps["models"]:
        for key, kind in (("purpose", list), ("priority", (int, float)), ("sizeGb", (int, float)),
                          ("costClass", str), ("exclusive", bool), ("allowWhenBusy", bool), ("maxConcurrent", int)):
            assert isinstance(m[key], kind), (m["name"], key)
    assert caps["models"][1]["tags"] == ["planning", "tool_use"]
    assert caps["routes"]["code_review"] == [DEEPSEEK, QWEN] and caps["routes"]["unknown"] == [VIBE]
    # Without the base path the node answers the JSON 404 (never HTML: Kong would call that invalid JSON).
    check_error(stack.request("GET", "/v1/router/capabilities", prefix=False), 404)


def test_snapshot_endpoints_never_wait_on_ollama(stack):
    kong = kong_for(stack)
    stack.sim.inject("/api/ps", Fault(first_byte_delay_s=30, times=None))
    stack.sim.inject("/api/tags", Fault(first_byte_delay_s=30, times=None))
    try:
        for path in ("/v1/router/capabilities", "/v1/router/runtime"):
            t0 = time.perf_counter()
            reply = kong.call("GET", path)
            assert reply.status == 200 and time.perf_counter() - t0 < 0.25, (path, reply)
    finally:
        stack.sim.clear_faults()
    ollama_down(stack)
    caps = kong.call("GET", "/v1/router/capabilities")
    assert caps.status == 200 and caps.json()["status"] == "ok"


# ---- runtime (C.5) ----------------------------------------------------------------------------------

def test_runtime_contract(stack):
    kong = kong_for(stack, "header")
    assert kong.call("POST", "/v1/router/execute", execute_body(QWEN, "ECHO: OK")).status == 200
    stack.run(stack.app.snapshot.poke)
    wait_for(lambda: stack.app.scheduler.states[QWEN].loaded)
    reply = kong.call("GET", "/v1/router/runtime")
    assert reply.status == 200
    rt = reply.json()
    assert_no_null(rt)
    assert rt["nodeId"] == "test-node" and rt["status"] == "ok"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rt["timestamp"])
    assert rt["ollama"] == {"baseUrl": stack.sim.url, "reachable": True}
    gpu = rt["gpu"]
    assert gpu["provider"] == "nvidia" and gpu["vramTotalMb"] > 0 and 0 <= gpu["vramFreeMb"] < gpu["vramTotalMb"]
    assert isinstance(gpu["snapshotAgeMs"], int) and 0 <= gpu["snapshotAgeMs"] < 5000
    assert isinstance(rt["snapshotAgeMs"], int) and 0 <= rt["snapshotAgeMs"] < 5000
    loaded = {m["name"]: m for m in rt["loadedModels"]}
    assert loaded[QWEN]["processor"] == "100% GPU"
    assert set(rt["queues"]) == {"globalQueued", "globalRunning", "byModel"}
    assert rt["queues"]["byModel"][1] == {"model": QWEN, "queued": 0, "running": 0, "concurrency": 1}
    assert rt["jobs"] == {"queued": 0, "running": 0, "succeededRetained": 0, "failedRetained": 0,
                          "cancelledRetained": 0, "expiredRetained": 0}


@pytest.mark.parametrize("size,size_vram,text", [
    (6_654_289_920, 6_654_289_920, "100% GPU"),
    (6_654_289_920, 0, "100% CPU"),
    (10_000_000_000, 5_200_000_000, "48%/52% CPU/GPU"),
    (10_000_000_000, 9_950_000_000, "1%/99% CPU/GPU"),  # 0.5 rounds half up, as Go's math.Round
    (1_000, 2_000, "Unknown"),
])
def test_processor_text_matches_the_ollama_cli(size, size_vram, text):
    assert processor_text(size, size_vram) == text


def test_runtime_renders_a_cpu_gpu_split_like_the_ollama_cli(stack_factory):
    stack = stack_factory(sim_kw={"gpu_total_mb": 8192})  # gpt-oss:20b does not fit: partly on the CPU
    kong = kong_for(stack)
    assert kong.call("POST", "/v1/router/execute", execute_body(GPTOSS, "x")).status == 200
    stack.run(stack.app.snapshot.poke)
    wait_for(lambda: stack.app.scheduler.states[GPTOSS].loaded)
    loaded = {m["name"]: m for m in kong.call("GET", "/v1/router/runtime").json()["loadedModels"]}
    assert re.fullmatch(r"(\d+)%/(\d+)% CPU/GPU", loaded[GPTOSS]["processor"])
    cpu, gpu = map(int, re.findall(r"\d+", loaded[GPTOSS]["processor"]))
    assert cpu + gpu == 100 and cpu > 0


def test_snapshot_age_is_real(stack):
    stack.sim.inject("/api/ps", Fault(first_byte_delay_s=30, times=None))
    stack.sim.inject("/api/version", Fault(first_byte_delay_s=30, times=None))
    try:
        # While every poll hangs, the snapshot keeps its last values and its age grows.
        assert wait_for(lambda: kong_for(stack).call("GET", "/v1/router/runtime").json()["snapshotAgeMs"] > 300)
    finally:
        stack.sim.clear_faults()


def _failing_gpu(self):
    raise GpuUnavailable("simulated NVML failure")


STATES = ["no_gpu", "ollama_down", "gpu_degraded", "busy_queues"]


@pytest.mark.parametrize("state", STATES)
def test_no_json_null_anywhere_kong_reads(stack_factory, monkeypatch, state):
    if state == "no_gpu":
        stack = stack_factory({"gpu": {"provider": "none"}}, simulated_gpu=False)
    elif state == "gpu_degraded":
        monkeypatch.setattr(SimulatedGpu, "read_devices", _failing_gpu)
        stack = stack_factory()
    else:
        stack = stack_factory()
    kong = kong_for(stack)
    expected = {"no_gpu": "ok", "ollama_down": "unavailable", "gpu_degraded": "degraded", "busy_queues": "ok"}[state]
    slot = None
    if state == "ollama_down":
        ollama_down(stack)
    if state == "busy_queues":
        slot = stack.call(acquire(stack.app.scheduler, GPTOSS))
        job = kong.call("POST", "/v1/router/jobs", execute_body(GPTOSS, "queued job"))
        assert job.status == 202
    try:
        rt = kong.call("GET", "/v1/router/runtime").json()
        assert rt["status"] == expected
        assert ("gpu" in rt) == (state != "no_gpu")
        assert rt["ollama"]["reachable"] is (state != "ollama_down")
        if state == "busy_queues":
            assert rt["queues"]["globalQueued"] == 1 and rt["queues"]["globalRunning"] == 1
        bodies = [rt]
        for path in ("/v1/router/capabilities", "/v1/router/status", "/v1/router/gpu", "/v1/router/models",
                     "/v1/router/nope", "/v1/jobs/job_test-node_missing"):
            reply = kong.call("GET", path)
            assert reply.headers["content-type"].startswith("application/json"), path
            bodies.append(reply.json())
        for body in (execute_body("nope", "x"), {"request": {}}, execute_body(VIBE, "x", request={"messages": []})):
            bodies.append(kong.call("POST", "/v1/router/execute", body).json())
            bodies.append(kong.call("POST", "/v1/router/jobs", body).json())
        bodies.append(kong.call("DELETE", "/v1/router/runtime").json())
        if state == "ollama_down":
            down = kong.call("POST", "/v1/router/execute", execute_body(VIBE, "x"))
            check_error(down, 503)
        for body in bodies:
            assert_no_null(body)
    finally:
        if slot is not None:
            stack.run(slot.release)


# ---- execute (C.6) ------------------------------------------------------------------------------------

@pytest.mark.parametrize("auth", sorted(KONG_AUTH_FORMS))
def test_execute_runs_on_the_chosen_model_without_rerouting(stack, auth):
    # "Hello" would route to VIBE; Kong chose DEEPSEEK, with a task type the original rejected.
    body = execute_body(DEEPSEEK, "ECHO: OK", request={"temperature": 0.2, "router": {"mode": "sync"}})
    body["routerDecision"]["taskType"] = "planning"
    reply = kong_for(stack, auth).call("POST", "/v1/router/execute", body)
    assert reply.status == 200, reply
    out = reply.json()
    assert_no_null(out)
    assert set(out) == {"result", "nodeId", "selectedModel", "queueTimeMs", "executionTimeMs"}
    assert out["result"]["choices"][0]["message"]["content"] == "OK"
    assert out["nodeId"] == "test-node" and out["selectedModel"] == DEEPSEEK
    assert isinstance(out["queueTimeMs"], int) and isinstance(out["executionTimeMs"], int)
    sent = stack.sim.calls[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["model"] == DEEPSEEK
    assert "router" not in sent["body"] and sent["body"]["stream"] is False and sent["body"]["temperature"] == 0.2


def test_execute_and_jobs_are_lenient_where_kong_is_loose(stack):
    kong = kong_for(stack)
    body = execute_body(QWEN, "ECHO: OK", request={"router": {"priority": "urgent", "preferredModels": {},
                                                              "forbiddenModels": {}, "taskType": "complex_debugging"}})
    body["priority"] = "urgent"
    body["routerDecision"] = {"taskType": "complex_debugging", "priority": "critical", "extra": [1, 2]}
    assert kong.call("POST", "/v1/router/execute", body).status == 200
    body["classification"] = {"taskType": "planning", "complexity": "heavy", "confidence": 1}
    job = kong.call("POST", "/v1/router/jobs", body)
    assert job.status == 202, job
    record = kong.call("GET", f"/v1/jobs/{job.json()['id']}").json()
    assert record["task_type"] == "planning" and record["priority"] == 50


def test_execute_error_statuses_follow_c9(stack_factory):
    stack = stack_factory()
    kong = kong_for(stack)
    check_error(kong.call("POST", "/v1/router/execute", execute_body("nope:1b", "x")), 404,
                 "Unknown configured model: nope:1b")
    check_error(kong.call("POST", "/v1/router/execute", execute_body(VIBE, "x", request={"messages": []})), 400,
                 "messages must be a non-empty array")
    check_error(kong.call("POST", "/v1/router/execute", {"request": {"messages": [{"role": "user"}]}}), 400)
    check_error(kong.call("POST", "/v1/router/execute", {"selectedModel": VIBE}), 400)
    check_error(kong.call("POST", "/v1/router/execute"), 400)
    stack.sim.inject(VIBE, Fault(status=500, message="llama runner process has terminated"))
    err = check_error(kong.call("POST", "/v1/router/execute", execute_body(VIBE, "x")), 502)
    assert "llama runner process has terminated" in err["message"]
    stack.sim.inject(VIBE, Fault(status=503))
    check_error(kong.call("POST", "/v1/router/execute", execute_body(VIBE, "x")), 503)
    stack.sim.inject(VIBE, Fault(first_byte_delay_s=5))
    slow = execute_body(VIBE, "x", request={"router": {"maxExecutionTimeMs": 100}})
    check_error(kong.call("POST", "/v1/router/execute", slow), 504)
    assert len([c for c in stack.sim.calls if c["path"] == "/v1/chat/completions"]) == 3  # never re-routed


def test_execute_honours_priority_and_queue_limits(stack_factory):
    # Two waiting calls from one Kong: the per-user quota (1 here) must not count Kong as a single user.
    stack = stack_factory({"queue": {"perUserMaxQueued": 1}})
    kong = kong_for(stack)
    slot = stack.call(acquire(stack.app.scheduler, QWEN))
    replies: dict[str, Reply] = {}

    def send(name: str, body: dict) -> None:
        replies[name] = kong.call("POST", "/v1/router/execute", body)

    def queued(n: int):
        return lambda: stack.app.scheduler.counts(QWEN)[0] == n

    threads = []
    for waiting, name in enumerate(("low", "high"), start=1):
        body = execute_body(QWEN, f"ECHO: {name}")
        body["priority"] = name
        threads.append(threading.Thread(target=send, args=(name, body)))
        threads[-1].start()
        wait_for(queued(waiting))
    bounded = execute_body(QWEN, "x", request={"router": {"maxQueueTimeMs": 50}})
    err = check_error(kong.call("POST", "/v1/router/execute", bounded), 503)
    assert err["code"] == "queue_timeout"
    stack.run(slot.release)
    for t in threads:
        t.join(10)
    assert replies["low"].status == replies["high"].status == 200
    order = [c["body"]["messages"][0]["content"] for c in stack.sim.calls if c["path"] == "/v1/chat/completions"]
    assert order == ["ECHO: high", "ECHO: low"]


def test_execute_relays_a_stream_when_asked(stack):
    body = execute_body(VIBE, "ECHO: one two three", request={"stream": True})
    reply = kong_for(stack).call("POST", "/v1/router/execute", body)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    text = reply.body.decode()
    first, *events = [e for e in text.split("\n\n") if e]
    assert first.startswith(": router ") and json.loads(first[len(": router "):])["selectedModel"] == VIBE
    assert events[-1] == "data: [DONE]"
    content = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
                      for e in events[:-1] if json.loads(e[6:])["choices"])
    assert content == "one two three"
    assert stack.sim.calls[-1]["body"]["stream"] is True


# ---- jobs (C.7, C.8) ----------------------------------------------------------------------------------

def test_job_contract_and_routing_back(stack_factory):
    stack = stack_factory({"server": {"basePath": "/ollama-router"}})
    kong = kong_for(stack, "bearer")
    body = execute_body(GPTOSS, "ECHO: ASYNC_OK")
    body["classification"] = {"taskType": "agentic_reasoning", "complexity": "heavy",
                              "requiresLargeContext": False, "requiresToolUse": False, "confidence": 1}
    body["priority"] = "high"
    body["routerDecision"] = {"score": 281, "reason": "Heavy load detected", "priority": "high"}
    busy = stack.call(acquire(stack.app.scheduler, GPTOSS))  # Kong sends jobs when the model is busy
    reply = kong.call("POST", "/v1/router/jobs", body)
    assert reply.status == 202, reply
    job = reply.json()
    assert_no_null(job)
    assert set(job) == {"id", "status", "position", "nodeId", "selectedModel"}
    assert job["status"] == "queued" and job["position"] == 1 and job["nodeId"] == "test-node"
    assert job["selectedModel"] == GPTOSS
    assert re.fullmatch(r"job_test-node_[A-Za-z0-9_-]{16}", job["id"])
    assert re.match(r"^job_([^_]+)_", job["id"]).group(1) == "test-node"  # Kong's Lua pattern, as a regex
    assert kong.call("GET", f"/v1/jobs/{job['id']}/result", zero_length=True).json() == {"status": "queued"}
    stack.run(busy.release)

    def result() -> Reply | None:
        r = kong.call("GET", f"/v1/jobs/{job['id']}/result", zero_length=True)
        assert r.status in (200, 202), r
        return r if r.status == 200 else None

    done = wait_for(result)
    assert done.json()["choices"][0]["message"]["content"] == "ASYNC_OK"
    record = kong.call("GET", f"/v1/jobs/{job['id']}").json()
    assert record["task_type"] == "agentic_reasoning" and record["selected_model"] == GPTOSS
    assert record["priority"] == 90
    assert kong.call("DELETE", f"/v1/jobs/{job['id']}").status == 200


def test_job_rejects_a_stream_and_unknown_models(stack):
    kong = kong_for(stack)
    check_error(kong.call("POST", "/v1/router/jobs", execute_body(VIBE, "x", request={"stream": True})), 400)
    check_error(kong.call("POST", "/v1/router/jobs", execute_body("ghost:7b", "x")), 404,
                 "Unknown configured model: ghost:7b")


@pytest.mark.parametrize("zero_length", [False, True])
def test_bodiless_get_and_delete_declaring_json(stack, zero_length):
    kong = kong_for(stack)
    for path in ("/v1/router/capabilities", "/v1/router/runtime", "/v1/jobs"):
        assert kong.call("GET", path, zero_length=zero_length).status == 200, path
    job = kong.call("POST", "/v1/router/jobs", execute_body(VIBE, "x")).json()
    reply = kong.call("DELETE", f"/v1/jobs/{job['id']}", zero_length=zero_length)
    assert reply.status == 200 and reply.json()["id"] == job["id"]
