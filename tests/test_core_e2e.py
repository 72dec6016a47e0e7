"""One routed request end to end: the official openai SDK -> router -> simulator, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import time

import openai
import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, VIBE, chat_body, wait_for

from ollama_agent_router.simulator.run import Fault


def ask(stack, content, **router):
    client = stack.openai()
    kw = {"extra_body": {"router": router}} if router else {}
    return client.chat.completions.create(model="auto", messages=[{"role": "user", "content": content}], **kw)


@pytest.mark.parametrize(
    "content,model,task",
    [
        ("Hello there", VIBE, "simple_chat"),
        ("Write a TypeScript function to parse JSON", QWEN, "code_generate"),
        ("Review this TypeScript code ```const x = 1```", DEEPSEEK, "code_review"),
    ],
)
def test_sync_routing_with_openai_sdk(stack, content, model, task):
    reply = ask(stack, content)
    router = reply.model_extra["router"]
    assert router["selectedModel"] == model and router["taskType"] == task
    assert router["mode"] == "sync" and reply.choices[0].message.content
    assert set(router) >= {"mode", "taskType", "selectedModel", "fallbackModels", "queueTimeMs",
                           "executionTimeMs", "decisionReason"}
    assert model not in router["fallbackModels"]
    assert stack.chat_calls()[-1]["model"] == model


def test_explicit_task_type_and_async_client(stack):
    async def main():
        client = stack.async_openai()
        reply = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "Plan a multi-step architecture investigation"}],
            extra_body={"router": {"taskType": "agentic_reasoning", "allowAsync": False}},
        )
        return reply.model_extra["router"]

    router = asyncio.run(main())
    assert router["selectedModel"] == GPTOSS and router["taskType"] == "agentic_reasoning"
    assert router["decisionReason"].startswith(f"Selected {GPTOSS} for agentic_reasoning with score ")


def test_forwarded_body_keeps_tool_fields_and_drops_router(stack):
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny"},
        {"role": "user", "content": "and images", "images": ["aGVsbG8="]},
    ]
    body = {"model": "auto", "messages": messages, "temperature": 0.3, "router": {"taskType": "tool_use"}}
    r = stack.request("POST", "/v1/chat/completions", body)
    assert r.status == 200, r
    sent = stack.chat_calls()[-1]["body"]
    assert "router" not in sent and sent["temperature"] == 0.3 and sent["stream"] is False
    assert sent["messages"] == messages
    assert sent["model"] == r.json()["router"]["selectedModel"]


def test_streaming_relay_with_usage_and_router_metadata(stack):
    client = stack.openai()
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": "Hello there"}], stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-router-selected-model"] == VIBE
        assert response.headers["x-router-task-type"] == "simple_chat"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_sse_comment_line_is_first_and_ignored_by_the_sdk(stack):
    r = stack.request("POST", "/v1/chat/completions", dict(chat_body("Hello there"), stream=True))
    assert r.status == 200
    text = r.body.decode()
    first_event = text.split("\n\n", 1)[0]
    assert first_event.startswith(": router ")
    meta = json.loads(first_event[len(": router "):])
    assert meta["selectedModel"] == VIBE
    assert text.rstrip().endswith("data: [DONE]")
    # The SDK parsed the same stream without tripping over the comment (test above); here the raw bytes.


def test_streaming_tool_call_deltas_pass_through_untouched(stack):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    client = stack.openai()
    stream = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "weather in Oslo"}],
                                            tools=tools, stream=True)
    calls = [tc for chunk in stream for ch in chunk.choices for tc in (ch.delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments)
    # tools[] -> tool_use: gpt-oss edges out qwen by its priority (spec §5.5, "by a hair")
    assert stack.chat_calls()[-1]["model"] == GPTOSS and stack.chat_calls()[-1]["body"]["tools"] == tools


def test_mid_stream_failure_becomes_an_sdk_error(stack):
    stack.run(lambda: stack.sim.inject(VIBE, Fault(drop_after_chunks=2)))
    client = stack.openai()
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}],
                                                stream=True):
            pass
    wait_for(lambda: stack.app.scheduler.total_running == 0)


def test_stream_without_done_is_a_failure(stack):
    stack.run(lambda: stack.sim.inject(VIBE, Fault(no_done=True)))
    client = stack.openai()
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}],
                                                stream=True):
            pass


def test_client_disconnect_frees_the_upstream(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 20, "reply_tokens": 200})
    sock = socket.create_connection(("127.0.0.1", stack.port))
    body = json.dumps(dict(chat_body("Hello there"), stream=True)).encode()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    wait_for(lambda: stack.sim.in_flight.get(VIBE, 0) == 1)
    sock.close()
    wait_for(lambda: stack.sim.cancelled >= 1)
    wait_for(lambda: stack.app.scheduler.total_running == 0 and stack.sim.in_flight.get(VIBE, 0) == 0)


# ---- error statuses -------------------------------------------------------------------------------

def test_malformed_json_is_400_even_with_form_content_type(stack):
    r = stack.request("POST", "/v1/chat/completions", raw=b"{nope", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_json"
    good = json.dumps(chat_body("Hello there")).encode()
    r = stack.request("POST", "/v1/chat/completions", raw=good, headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status == 200


@pytest.mark.parametrize("body", [[1, 2], {"messages": []}, {"messages": [{"content": "x"}]}, {"model": None, "messages": [{"role": "user", "content": "x"}]},
                                  {"messages": [{"role": "user", "content": "x"}], "stream": "yes"}])
def test_invalid_bodies_are_400(stack, body):
    r = stack.request("POST", "/v1/chat/completions", body)
    assert r.status == 400
    err = r.json()["error"]
    assert err["message"] and err["type"] == "invalid_request_error" and err["code"]


def test_unknown_route_and_wrong_method_are_json(stack):
    r = stack.request("GET", "/nope")
    assert r.status == 404 and r.json()["error"]["message"] == "Not found"
    r = stack.request("GET", "/v1/chat/completions")
    assert r.status == 405 and "POST" in r.headers["allow"]
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_express_style_matching(stack):
    assert stack.request("GET", "/HEALTH/").status == 200
    assert stack.request("GET", "//health").status == 404
    r = stack.request("HEAD", "/health")
    assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0


def test_body_over_limit_is_413(stack):
    r = stack.request("POST", "/v1/chat/completions", raw=b"x" * (2 * 1024 * 1024 + 1))
    assert r.status == 413 and r.json()["error"]["code"] == "body_too_large"


def test_chunked_body_over_limit_is_413(stack):
    sock = socket.create_connection(("127.0.0.1", stack.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n" % (3 * 1024 * 1024))
    data = sock.recv(4096)
    sock.close()
    assert data.startswith(b"HTTP/1.1 413")


def test_huge_header_block_is_431(stack):
    r = stack.request("GET", "/health", headers={"x-big": "a" * 40000})
    assert r.status == 431
    r = stack.request("GET", "/health", headers={f"x-h{i}": "v" for i in range(120)})
    assert r.status == 431


def test_malformed_request_line_is_400_then_close(stack):
    sock = socket.create_connection(("127.0.0.1", stack.port))
    sock.sendall(b"BROKEN\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    sock.close()
    assert data.startswith(b"HTTP/1.1 400") and data.count(b"HTTP/1.1") == 1


def test_no_candidate_is_503_naming_every_candidate(stack):
    body = chat_body("x", taskType="agentic_reasoning", requireGpuOnly=True, preferredModels=[GPTOSS],
                     forbiddenModels=[QWEN], allowAsync=False)
    stack.run(lambda: stack.app.scheduler.set_loaded({GPTOSS: "63%/37% cpu/gpu"}, None))
    r = stack.request("POST", "/v1/chat/completions", body)
    assert r.status == 503 and r.json()["error"]["message"] == f"{GPTOSS}: gpu_only"


def test_upstream_timeout_is_504(stack_factory):
    stack = stack_factory({"models": [dict(m, timeoutMs=300) for m in __import__("conftest").TEST_CONFIG["models"]]})
    stack.run(lambda: stack.sim.inject("*", Fault(first_byte_delay_s=2, times=None)))
    r = stack.request("POST", "/v1/chat/completions", chat_body("Hello there", allowAsync=False))
    assert r.status == 504 and r.json()["error"]["code"] == "upstream_timeout"
    wait_for(lambda: stack.app.scheduler.total_running == 0)


def test_a_long_non_streamed_reply_is_bounded_by_the_model_timeout_not_the_first_byte_deadline(stack_factory):
    # A JSON reply's first byte comes when generation ends: a 2 s generation on a 3 s model is a 200, even with a
    # 1 s first-byte deadline, for a sync request and for a job. A stream keeps the deadline: time to first token.
    models = [dict(m, timeoutMs=3000) for m in __import__("conftest").TEST_CONFIG["models"]]
    stack = stack_factory({"models": models, "ollama": {"firstByteTimeoutMs": 1000}})
    stack.run(lambda: stack.sim.inject("*", Fault(first_byte_delay_s=2, times=None)))
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there")).status == 200
    job = stack.request("POST", "/v1/chat/completions", chat_body("Hello there", mode="async")).json()
    wait_for(lambda: stack.request("GET", f"/v1/jobs/{job['id']}").json()["status"] != "queued", timeout=5)
    wait_for(lambda: stack.request("GET", f"/v1/jobs/{job['id']}").json()["status"] == "succeeded", timeout=10)
    streamed = stack.request("POST", "/v1/chat/completions", dict(chat_body("Hello there"), stream=True))
    assert streamed.status == 504 and streamed.json()["error"]["code"] == "upstream_timeout"


def test_upstream_error_message_is_relayed(stack):
    stack.run(lambda: stack.sim.inject("*", Fault(status=500, message="llama runner process has terminated", times=None)))
    r = stack.request("POST", "/v1/chat/completions", chat_body("Hello there"))
    assert r.status == 502
    assert "llama runner process has terminated" in r.json()["error"]["message"]


def test_upstream_4xx_keeps_its_status(stack):
    stack.run(lambda: stack.sim.inject(VIBE, Fault(status=400, message="invalid tool call arguments")))
    r = stack.request("POST", "/v1/chat/completions", chat_body("Hello there"))
    assert r.status == 400 and "invalid tool call arguments" in r.json()["error"]["message"]


def test_ollama_unreachable_is_503(stack):
    stack.call(stack.sim.stop())
    r = stack.request("POST", "/v1/chat/completions", chat_body("Hello there"))
    assert r.status == 503 and r.json()["error"]["code"] == "ollama_unreachable"
    assert "retry-after" in r.headers


def test_request_id_is_honoured_or_generated(stack):
    r = stack.request("GET", "/health", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = stack.request("GET", "/health", headers={"x-request-id": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces" and len(r.headers["x-request-id"]) == 16


def test_access_log_lines_carry_no_secrets(stack):
    stack.request("POST", "/v1/chat/completions", chat_body("Hello there"),
                  headers={"authorization": "Bearer sk-secret-value-123", "x-api-key": "other-secret"})
    wait_for(lambda: any('"event":"request"' in line for line in stack.log_lines))
    text = "".join(stack.log_lines)
    assert "sk-secret-value-123" not in text and "other-secret" not in text
    access = [json.loads(line) for line in stack.log_lines if '"event":"request"' in line]
    entry = access[-1]
    assert entry["status"] == 200 and entry["model"] == VIBE and entry["requestId"] and entry["durationMs"] >= 0


def test_cross_origin_requests_are_refused(stack):
    r = stack.request("POST", "/v1/chat/completions", chat_body("Hello there"), headers={"origin": "https://evil.example"})
    assert r.status == 403


# ---- status endpoints -----------------------------------------------------------------------------

def test_health_stays_up_but_says_degraded_and_why(stack):
    async def switch(down):
        await stack.sim.set_down(down)
        stack.app.snapshot.poke()

    assert stack.request("GET", "/health").json()["status"] == "ok"
    stack.call(switch(True))
    wait_for(lambda: stack.request("GET", "/health").json()["status"] == "degraded")
    r = stack.request("GET", "/health")
    assert r.status == 200 and r.json()["reason"] == f"Ollama is unreachable at {stack.sim.url}"
    stack.call(switch(False))
    wait_for(lambda: stack.request("GET", "/health").json()["status"] == "ok")


def test_status_endpoints(stack):
    assert stack.request("GET", "/health").json() == {"status": "ok", "service": "ollama-agent-router"}
    status = stack.request("GET", "/v1/router/status").json()
    assert status["nodeId"] == "test-node" and status["config"]["models"] == 4
    assert status["queue"]["byModel"][0] == {"model": VIBE, "queued": 0, "running": 0, "concurrency": 2}
    models = stack.request("GET", "/v1/router/models").json()
    assert [m["name"] for m in models["configured"]] == [VIBE, QWEN, DEEPSEEK, GPTOSS]
    assert isinstance(models["ollama"]["models"], list)
    gpu = stack.request("GET", "/v1/router/gpu").json()
    assert gpu["provider"] == "nvidia" and gpu["vramTotalMb"] > 0 and "snapshotAgeMs" in gpu


def test_metrics_text_format(stack):
    ask(stack, "Hello there")
    r = stack.request("GET", "/metrics")
    text = r.body.decode()
    assert r.headers["content-type"].startswith("text/plain")
    assert text.endswith("\n")
    for name in ("oar_queue_global_queued", "oar_requests_total", "oar_request_duration_seconds"):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text
    assert f'oar_requests_total{{plane="standalone",task_type="simple_chat",model="{VIBE}",mode="sync",status="200",api="openai"}} 1' in text


def test_loaded_models_match_with_and_without_latest(stack_factory):
    models = [dict(m) for m in __import__("conftest").TEST_CONFIG["models"]]
    models[0]["name"] = "llama3"  # the simulator reports it as llama3:latest in /api/ps
    routes = {k: ["llama3" if n == VIBE else n for n in v] for k, v in __import__("conftest").TEST_CONFIG["routes"].items()}
    stack = stack_factory({"models": models, "routes": routes})
    ask(stack, "Hello there")
    stack.run(stack.app.snapshot.poke)
    wait_for(lambda: stack.app.scheduler.states["llama3"].loaded)
    names = [m["name"] for m in stack.request("GET", "/v1/router/status").json()["loadedModels"]]
    assert "llama3:latest" in names


def test_base_path_prefixes_every_route(stack_factory):
    stack = stack_factory({"server": {"basePath": "ollama-router/"}})
    assert stack.request("GET", "/health").status == 200
    assert stack.request("GET", "/health", prefix=False).status == 404
    assert stack.request("GET", "/ollama-routerx/health", prefix=False).status == 404
    assert stack.request("GET", "/v1/router/status").json()["config"]["basePath"] == "/ollama-router"
    assert ask(stack, "Hello there").model_extra["router"]["selectedModel"] == VIBE


def test_https(stack_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    stack = stack_factory({"server": {"https": {"enabled": True, "certPath": str(cert), "keyPath": str(key)}}})
    import httpx

    client = openai.OpenAI(base_url=f"https://127.0.0.1:{stack.port}/v1", api_key="x", max_retries=0,
                           http_client=httpx.Client(verify=ssl.create_default_context(cafile=str(cert))))
    reply = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}])
    assert reply.model_extra["router"]["selectedModel"] == VIBE
    with pytest.raises(Exception):
        stack.request("GET", "/health")  # plain HTTP is not spoken on the TLS port


def test_keep_alive_reuses_the_connection(stack):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", stack.port)
    for _ in range(3):
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read()
    sock = conn.sock
    conn.request("GET", "/health")
    conn.getresponse().read()
    assert conn.sock is sock
    conn.close()


def test_graceful_stop_finishes_in_flight_requests(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 50, "reply_tokens": 10})
    client = stack.openai()
    import threading

    result = {}

    def call():
        result["reply"] = client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hello there"}])

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: stack.app.server.in_flight == 1)
    assert stack.call(stack.app.stop(5.0)) is True
    t.join(5)
    assert result["reply"].choices[0].message.content
    started = time.monotonic()
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "again"}])
    assert time.monotonic() - started < 5
