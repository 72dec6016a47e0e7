"""The Anthropic Messages door through the router, against the simulator, with the official anthropic SDK:
routed like a chat completion, run on Ollama's own /v1/messages with the body untouched but ``model``,
streams relayed event for event, and every error in Anthropic's shape."""

from __future__ import annotations

import asyncio
import threading

import anthropic
import pytest
from access_support import LOCKED, access, api_key, secret
from conftest import DEEPSEEK, QWEN, VIBE, wait_for

from ollama_agent_router.simulator.run import Fault

CODE = "Write a Python function that reverses a string"
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                            "required": ["city", "days"]}}
TEXT_EVENTS = (["message_start", "content_block_start"] + ["content_block_delta"] * 8
               + ["content_block_stop", "message_delta", "message_stop"])


def client(stack, **kw) -> anthropic.Anthropic:
    kw.setdefault("api_key", "sk-none")
    return anthropic.Anthropic(base_url=stack.url, max_retries=0, **kw)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sent(stack) -> list[dict]:
    """What reached the simulator's /v1/messages."""
    return stack.chat_calls(path="/v1/messages")


def named_events(body: bytes) -> list[str]:
    """The event names of a named-event stream; anything but ``event:`` + ``data:`` lines fails the test."""
    names = []
    for block in body.decode().split("\n\n"):
        if block:
            name, data = block.split("\n")
            assert name.startswith("event: ") and data.startswith("data: "), block
            names.append(name[len("event: "):])
    return names


# ---- the SDK, routed --------------------------------------------------------------------------------------

def test_create_is_routed_and_runs_on_ollamas_messages_api(stack):
    c = client(stack)
    system = [{"type": "text", "text": "You are a coding assistant.", "cache_control": {"type": "ephemeral"}}]
    raw = c.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=256, system=system,
                                              messages=user(CODE), metadata={"user_id": "u1"})
    msg = raw.parse()
    assert raw.headers["x-router-selected-model"] == QWEN == msg.model
    assert raw.headers["x-router-task-type"] == "code_generate" and msg.model_extra["router"]["selectedModel"] == QWEN
    assert msg.content[0].text == f"Simulated reply from {QWEN}." and msg.stop_reason == "end_turn"
    body = sent(stack)[-1]["body"]
    assert body == {"model": QWEN, "max_tokens": 256, "system": system, "messages": user(CODE),
                    "metadata": {"user_id": "u1"}, "stream": False}
    assert client(stack).messages.create(model=DEEPSEEK, max_tokens=64, messages=user("hi")).model == DEEPSEEK
    assert client(stack).messages.create(model="claude-haiku-4-5", max_tokens=64, messages=user("hi")).model == VIBE


def test_stream_relays_the_events_unchanged_with_the_decision_in_headers_only(stack):
    with client(stack).messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=user(CODE)) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        headers = stream.response.headers
    assert text == f"Simulated reply from {QWEN}." and final.stop_reason == "end_turn" and final.usage.output_tokens == 8
    assert headers["x-router-selected-model"] == QWEN and headers["content-type"] == "text/event-stream"
    r = stack.request("POST", "/v1/messages", {"model": "auto", "max_tokens": 64, "stream": True, "messages": user(CODE)})
    assert r.status == 200 and named_events(r.body) == TEXT_EVENTS  # no comment lines, nothing added
    assert r.headers["x-router-decision-reason"].startswith(f"Selected {QWEN} for code_generate")


def test_beta_query_protocol_headers_and_x_api_key(stack_factory):
    stack = stack_factory(access(standalone=LOCKED, keys=[api_key("std", ["standalone"])]))
    beta = client(stack, api_key=secret("std")).beta.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=user("hi"), betas=["interleaved-thinking-2025-05-14"],
        extra_query={"beta": "true"})  # ?beta=true as Claude Code sends it
    assert beta.parse().content[0].text == f"Simulated reply from {VIBE}."
    call = sent(stack)[-1]
    assert call["query"] == "beta=true" and call["headers"]["anthropic-version"] == beta.http_request.headers[
        "anthropic-version"]
    assert call["headers"]["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert "x-api-key" not in call["headers"] and "authorization" not in call["headers"]  # keys stay here
    bearer = client(stack, api_key=None, auth_token=secret("std"))
    assert bearer.messages.create(model="auto", max_tokens=64, messages=user("hi")).model == VIBE
    with pytest.raises(anthropic.AuthenticationError) as e:
        client(stack, api_key="not-a-key").messages.create(model="auto", max_tokens=64, messages=user("hi"))
    assert e.value.body == {"type": "error", "error": {"type": "authentication_error", "message": "Invalid API key",
                                                       "code": "invalid_api_key"}}


def test_tool_use_round_trip(stack):
    c = client(stack)
    first = c.messages.create(model="claude-sonnet-4-5", max_tokens=256, tools=[WEATHER],
                              messages=user("What is the weather in Paris?"))
    use = first.content[-1]
    assert first.stop_reason == "tool_use" and use.type == "tool_use"
    assert first.model_extra["router"]["taskType"] == "tool_use" and first.model_extra["router"]["selectedModel"] == (
        first.model)
    history = [*user("What is the weather in Paris?"),
               {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
    with c.messages.stream(model="claude-sonnet-4-5", max_tokens=256, tools=[WEATHER], messages=history) as stream:
        model = stream.response.headers["x-router-selected-model"]
        assert stream.get_final_text() == f"Simulated reply from {model}."
        assert stream.response.headers["x-router-task-type"] == "tool_use"
    assert sent(stack)[-1]["body"]["messages"][2]["content"][0]["tool_use_id"] == use.id


def test_twenty_concurrent_async_clients(stack_factory):
    stack = stack_factory({"queue": {"perUserMaxQueued": 20}})  # one anonymous user sends all twenty at once
    prompts = [CODE, "hi there", "Summarize this: the cat sat on the mat.", "Review this diff: -a +b"] * 5

    async def one(c: anthropic.AsyncAnthropic, prompt: str) -> tuple[str, anthropic.types.Message]:
        raw = await c.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=64,
                                                        messages=user(prompt))
        return raw.headers["x-router-selected-model"], await raw.parse()

    async def go() -> list[tuple[str, anthropic.types.Message]]:
        async with anthropic.AsyncAnthropic(base_url=stack.url, api_key="sk-none", max_retries=0) as c:
            return await asyncio.gather(*(one(c, p) for p in prompts))

    replies = asyncio.run(go())
    assert all(msg.model == model and msg.content[0].text == f"Simulated reply from {model}."
               for model, msg in replies)
    assert len({model for model, _ in replies}) >= 2 and len(sent(stack)) == 20


def test_failover_before_the_first_byte(stack):
    stack.sim.inject(QWEN, Fault(status=500, message="runner crashed"))
    with client(stack).messages.stream(model="auto", max_tokens=64, messages=user(CODE)) as stream:
        assert stream.get_final_text() == f"Simulated reply from {DEEPSEEK}."
        headers = stream.response.headers
    assert headers["x-router-selected-model"] == DEEPSEEK
    assert headers["x-router-decision-reason"].startswith(f"Failed over to {DEEPSEEK} after {QWEN} (http_500)")
    assert [c["model"] for c in sent(stack)] == [QWEN, DEEPSEEK]


def test_a_stream_broken_by_ollama_ends_with_an_error_event(stack):
    stack.sim.inject(VIBE, Fault(mid_stream_error="boom"))
    with pytest.raises(anthropic.APIStatusError) as e:
        with client(stack).messages.stream(model=VIBE, max_tokens=64, messages=user("hi")) as stream:
            list(stream.text_stream)
    assert e.value.body["error"]["type"] == "api_error" and "ended before completion" in e.value.message


# ---- errors in Anthropic's shape ----------------------------------------------------------------------------

def test_errors_are_in_anthropics_shape(stack):
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(stack).messages.create(model="auto", max_tokens=0, messages=user("hi"))
    assert bad.value.body["type"] == "error" and bad.value.body["error"]["type"] == "invalid_request_error"
    assert bad.value.body["error"]["message"] == "max_tokens is required and must be positive"
    stack.sim.inject(DEEPSEEK, Fault(status=404, message=f"model '{DEEPSEEK}' not found"))
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(stack).messages.create(model=DEEPSEEK, max_tokens=64, stream=True, messages=user("hi"))
    assert missing.value.body["error"] == {"type": "not_found_error", "message": f"model '{DEEPSEEK}' not found",
                                           "code": "model_not_found", "upstreamStatus": 404}
    route = stack.request("POST", "/v1/messages/batches", {})
    assert route.status == 404 and route.json()["error"]["type"] == "not_found_error"
    method = stack.request("GET", "/v1/messages")
    assert method.status == 405 and method.json()["error"]["type"] == "invalid_request_error"
    assert method.headers["allow"] == "POST"
    huge = stack.request("POST", "/v1/messages?beta=true", raw=b"{" + b" " * (3 * 1024 * 1024) + b"}")
    assert huge.status == 413 and huge.json()["error"]["type"] == "request_too_large"
    assert stack.request("POST", "/v1/messages", raw=b"{nope").json()["error"]["code"] == "invalid_json"


def test_a_queue_timeout_is_an_overloaded_error(stack):
    stack.sim.inject(DEEPSEEK, Fault(first_byte_delay_s=2))
    slow = threading.Thread(target=lambda: client(stack).messages.create(model=DEEPSEEK, max_tokens=8,
                                                                          messages=user("hi")))
    slow.start()
    wait_for(lambda: stack.run(lambda: stack.app.scheduler.states[DEEPSEEK].running) == 1)
    with pytest.raises(anthropic.InternalServerError) as e:
        client(stack).messages.create(model=DEEPSEEK, max_tokens=8, messages=user("hi"),
                                      extra_body={"router": {"maxQueueTimeMs": 20}})
    slow.join()
    assert e.value.status_code == 503 and e.value.body["error"]["type"] == "overloaded_error"
    assert e.value.body["error"]["code"] == "queue_timeout" and e.value.response.headers["retry-after"] == "1"


# ---- count_tokens and the liveness probe ------------------------------------------------------------------

def test_count_tokens_is_a_local_estimate(stack):
    c = client(stack)
    small = c.messages.count_tokens(model="claude-sonnet-4-5", messages=user("hi"))
    big = c.beta.messages.count_tokens(model="claude-sonnet-4-5", system="Be brief.", tools=[WEATHER],
                                       messages=user(CODE * 10))
    assert small.input_tokens == 1 and big.input_tokens > 100
    assert sent(stack) == []  # Ollama has no such route: nothing went there


def test_root_answers_like_ollama(stack):
    got, head = stack.request("GET", "/"), stack.request("HEAD", "/")
    assert got.status == head.status == 200 and got.body == b"Ollama is running" and head.body == b""
    assert got.headers["content-type"].startswith("text/plain")
