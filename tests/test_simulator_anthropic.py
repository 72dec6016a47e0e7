"""The simulator's Anthropic Messages door (wire-formats §7), checked with the official anthropic SDK and a raw
HTTP/1.1 client for the exact event sequence, shapes and errors."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import anthropic
import pytest
from sim_support import CODER, EMBED, THINKER, broken_streams, request, run, running

from ollama_agent_router.simulator.anthropic import MessagesSseWriter, estimate_input_tokens
from ollama_agent_router.simulator.plan import Reply
from ollama_agent_router.simulator.run import Fault

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                            "required": ["city", "days"]}}
HELLO = [{"role": "user", "content": "hello"}]


def client(sim: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=sim.url, api_key="ollama", max_retries=0)


def body(**fields: Any) -> dict[str, Any]:
    return {"model": CODER, "max_tokens": 256, "messages": HELLO, **fields}


# ---- the official SDK -------------------------------------------------------------------------------

def test_sdk_create_and_stream_text() -> None:
    async def go() -> None:
        async with running() as sim, client(sim) as c:
            msg = await c.messages.create(model=CODER, max_tokens=64, system="Be brief.",
                                          messages=[{"role": "user", "content": "say ECHO: hi there"}])
            assert re.fullmatch(r"msg_[0-9a-f]{24}", msg.id) and msg.model == CODER and msg.role == "assistant"
            assert [b.type for b in msg.content] == ["text"] and msg.content[0].text == "hi there"
            assert msg.stop_reason == "end_turn" and msg.stop_sequence is None and msg.usage.output_tokens == 8
            async with c.messages.stream(model=CODER, max_tokens=64, messages=HELLO) as stream:
                pieces = [text async for text in stream.text_stream]
                final = await stream.get_final_message()
            assert len(pieces) == 8 and "".join(pieces) == f"Simulated reply from {CODER}."
            assert final.stop_reason == "end_turn" and final.usage.output_tokens == 8
            cut = await c.messages.create(model=CODER, max_tokens=2, messages=HELLO)
            assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2
            assert [call["path"] for call in sim.calls] == ["/v1/messages"] * 3
    run(go())


def test_sdk_tool_use_round_trip_streamed_and_not() -> None:
    async def go() -> None:
        async with running() as sim, client(sim) as c:
            first = await c.messages.create(model=CODER, max_tokens=256, tools=[WEATHER], messages=HELLO)
            use = first.content[-1]
            assert first.stop_reason == "tool_use" and use.type == "tool_use" and use.name == "get_weather"
            assert re.fullmatch(r"call_[a-z0-9]{8}", use.id) and use.input == {"city": "sim", "days": 1}
            history = [*HELLO, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
                       {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"},
                                                    {"type": "text", "text": "<system-reminder>x</system-reminder>"}]}]
            answer = await c.messages.create(model=CODER, max_tokens=256, tools=[WEATHER], messages=history)
            assert answer.stop_reason == "end_turn" and answer.content[0].text == f"Simulated reply from {CODER}."
            async with c.messages.stream(model=CODER, max_tokens=256, tools=[WEATHER], messages=HELLO) as stream:
                final = await stream.get_final_message()
            assert final.stop_reason == "tool_use" and final.content[0].input == {"city": "sim", "days": 1}
            async with c.messages.stream(model=CODER, max_tokens=256, tools=[WEATHER], messages=history) as stream:
                assert await stream.get_final_text() == f"Simulated reply from {CODER}."
    run(go())


def test_sdk_thinking_and_relaxed_thinking() -> None:
    async def go() -> None:
        async with running() as sim, client(sim) as c:
            async with c.messages.stream(model=THINKER, max_tokens=64, messages=HELLO) as stream:
                final = await stream.get_final_message()
            assert [b.type for b in final.content] == ["thinking", "text"]
            assert final.content[0].thinking == "Thinking it over."
            off = await c.messages.create(model=THINKER, max_tokens=64, messages=HELLO, thinking={"type": "disabled"})
            assert [b.type for b in off.content] == ["text"]
            # A model that cannot think drops the request for thinking instead of refusing it (relax_thinking).
            relaxed = await c.messages.create(model=CODER, max_tokens=64, messages=HELLO,
                                              thinking={"type": "enabled", "budget_tokens": 1024})
            assert [b.type for b in relaxed.content] == ["text"]
    run(go())


def test_sdk_errors_have_anthropic_shape() -> None:
    async def go() -> None:
        async with running() as sim, client(sim) as c:
            with pytest.raises(anthropic.NotFoundError) as nf:
                await c.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO)
            assert nf.value.body["error"] == {"type": "not_found_error",
                                              "message": "model 'claude-sonnet-4-5' not found"}
            assert re.fullmatch(r"req_[0-9a-f]{24}", nf.value.body["request_id"])
            with pytest.raises(anthropic.BadRequestError) as bad:
                await c.messages.create(model=EMBED, max_tokens=64, messages=HELLO)
            assert bad.value.body["error"]["message"] == '"nomic-embed-text" does not support chat'
            sim.inject(CODER, Fault(status=503))
            with pytest.raises(anthropic.APIStatusError) as busy:
                async with c.messages.stream(model=CODER, max_tokens=64, messages=HELLO) as stream:
                    await stream.get_final_message()
            assert busy.value.status_code == 503 and busy.value.body["error"]["type"] == "overloaded_error"
    run(go())


def test_sdk_calls_share_the_scheduler() -> None:
    async def go() -> None:
        async with running(num_parallel=2, tokens_per_second=400, load_seconds_per_gb=0.01) as sim, client(sim) as c:
            replies = await asyncio.gather(*(
                c.messages.create(model=CODER, max_tokens=64, messages=[{"role": "user", "content": f"ECHO:{i}"}])
                for i in range(6)))
            assert sorted(r.content[0].text for r in replies) == [str(i) for i in range(6)]
            assert sim.peak_concurrency[CODER] == 2 and sim.loads == [CODER] and sim.in_flight[CODER] == 0
    run(go())


# ---- raw HTTP: exact events and shapes --------------------------------------------------------------

def test_stream_event_sequence_text_and_tool_use() -> None:
    async def go() -> None:
        async with running() as sim:
            r = await request(sim, "POST", "/v1/messages?beta=true", body(stream=True))
            assert r.status == 200 and r.headers["content-type"] == "text/event-stream" and r.complete
            events = r.named_events()
            assert [name for name, _ in events] == (["message_start", "content_block_start"]
                                                    + ["content_block_delta"] * 8
                                                    + ["content_block_stop", "message_delta", "message_stop"])
            assert all(data["type"] == name for name, data in events)
            start = events[0][1]["message"]
            assert list(start) == ["id", "type", "role", "model", "content", "usage"]  # no stop_reason/stop_sequence
            assert start["content"] == [] and start["usage"]["output_tokens"] == 0
            assert events[1][1] == {"type": "content_block_start", "index": 0,
                                    "content_block": {"type": "text", "text": ""}}
            assert events[2][1]["delta"]["type"] == "text_delta"
            assert events[-3][1] == {"type": "content_block_stop", "index": 0}
            assert events[-2][1]["delta"] == {"stop_reason": "end_turn"}
            assert events[-2][1]["usage"] == {"input_tokens": 2, "output_tokens": 8}  # the real count, not the estimate
            r = await request(sim, "POST", "/v1/messages", body(stream=True, tools=[WEATHER]))
            events = r.named_events()
            assert [name for name, _ in events] == ["message_start", "content_block_start", "content_block_delta",
                                                    "content_block_stop", "message_delta", "message_stop"]
            block = events[1][1]["content_block"]
            assert list(block) == ["type", "id", "name", "input"] and block["input"] == {}
            assert events[2][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"city":"sim","days":1}'}
            assert events[4][1]["delta"] == {"stop_reason": "tool_use"}
    run(go())


def test_stream_thinking_then_text_indices() -> None:
    async def go() -> None:
        async with running() as sim:
            events = (await request(sim, "POST", "/v1/messages", body(model=THINKER, stream=True))).named_events()
            starts = [(d["index"], d["content_block"]["type"]) for n, d in events if n == "content_block_start"]
            assert starts == [(0, "thinking"), (1, "text")]
            assert [d["index"] for n, d in events if n == "content_block_stop"] == [0, 1]
            assert {d["delta"]["type"] for n, d in events if n == "content_block_delta" and d["index"] == 0} == {
                "thinking_delta"}
    run(go())


def test_non_streamed_shape_and_headers() -> None:
    async def go() -> None:
        async with running() as sim:
            r = await request(sim, "POST", "/v1/messages", body(system=[{"type": "text", "text": "a"},
                                                                        {"type": "text", "text": "b"}]))
            obj = r.json()
            assert r.headers["content-type"] == "application/json" and r.body.endswith(b"\n")
            assert list(obj) == ["id", "type", "role", "model", "content", "stop_reason", "usage"]
            assert obj["usage"] == {"input_tokens": 2, "output_tokens": 8}
            r = await request(sim, "POST", "/v1/messages", body(tools=[WEATHER]))
            assert r.json()["content"] == [{"type": "tool_use", "id": r.json()["content"][0]["id"], "name": "get_weather",
                                            "input": {"city": "sim", "days": 1}}]
    run(go())


def test_validation_errors_in_order_and_json_even_when_streaming() -> None:
    cases = [
        (b"", 400, "missing request body"),
        ({"model": 5}, 400, "json: cannot unmarshal number into Go struct field MessagesRequest.model of type string"),
        ({"max_tokens": 1, "messages": HELLO}, 400, "model is required"),
        ({"model": CODER, "messages": HELLO}, 400, "max_tokens is required and must be positive"),
        ({"model": CODER, "max_tokens": 0, "messages": HELLO}, 400, "max_tokens is required and must be positive"),
        ({"model": CODER, "max_tokens": 5, "messages": []}, 400, "messages is required"),
        (body(messages=[{"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]}]),
         400, "tool_use block missing required 'id' field"),
        (body(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}]),
         400, "invalid image source type: url. Only base64 images are supported."),
        (body(messages=[{"role": "user", "content": [{"type": "image"}]}]), 400, "invalid image source"),
        (body(model="nope", stream=True), 404, "model 'nope' not found"),
    ]

    async def go() -> None:
        async with running() as sim:
            for sent, status, message in cases:
                r = await request(sim, "POST", "/v1/messages", sent)
                err = r.json()
                assert (r.status, err["type"], err["error"]["message"]) == (status, "error", message), sent
                assert err["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
            r = await request(sim, "POST", "/v1/messages/count_tokens", body())
            assert (r.status, r.body, r.headers["content-type"]) == (404, b"404 page not found", "text/plain")
            assert (await request(sim, "GET", "/v1/messages")).status == 405
    run(go())


def test_failures_after_the_first_event_just_end_the_body() -> None:
    async def go() -> None:
        async with running() as sim:
            for names in await broken_streams(sim, "/v1/messages", body(stream=True)):
                assert names[0] == "message_start"
                assert "message_delta" not in names and "message_stop" not in names and "error" not in names
            sim.inject(CODER, Fault(mid_stream_error="boom"))
            r = await request(sim, "POST", "/v1/messages", body())
            assert (r.status, r.json()["error"]["type"]) == (500, "api_error")
            sim.inject(CODER, Fault(drop_after_chunks=2))
            assert not (await request(sim, "POST", "/v1/messages", body(stream=True))).complete
            assert sim.in_flight[CODER] == 0
    run(go())


# ---- pure pieces ------------------------------------------------------------------------------------

def test_writer_closes_text_before_thinking_and_drops_late_thinking() -> None:
    writer = MessagesSseWriter("msg_x", "m", 3)
    out = b"".join(writer.event(kind, value) for kind, value in [
        ("content", "a"), ("thinking", "t"), ("content", "b"), ("thinking", "late"),
        ("tool_calls", [{"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {"z": 1, "a": 2}}}]),
        ("tool_calls", [{"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {}}}]),
    ]) + b"".join(writer.finish(Reply([], done_reason="stop"), {"eval_count": 4}))
    events = [json.loads(block.split(b"\ndata: ")[1]) for block in out.split(b"\n\n") if block]
    opened = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
    assert opened == [(0, "text"), (1, "thinking"), (2, "text"), (3, "tool_use")]  # the repeated call id is skipped
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert {"type": "thinking_delta", "thinking": "late"} not in deltas
    assert deltas[-1] == {"type": "input_json_delta", "partial_json": '{"z":1,"a":2}'}  # insertion order kept
    assert events[-2]["delta"] == {"stop_reason": "tool_use"}


def test_input_estimate_is_len_over_four() -> None:
    request_body = {"system": "12345678", "messages": [{"role": "user", "content": "abcd"}],
                    "tools": [{"name": "f", "description": "", "input_schema": {}}]}
    assert estimate_input_tokens(request_body) == (8 + 4 + 4 + 1 + 2) // 4
    assert estimate_input_tokens({"messages": [{"role": "", "content": ""}]}) == 1


def test_a_claude_code_shaped_turn() -> None:
    """The fields Claude Code sends (agent-clients.md), all accepted; its tool result beside a reminder is answered."""
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
              {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]
    tools = [dict(WEATHER, cache_control={"type": "ephemeral"}), {"type": "web_search_20250305", "name": "web_search"}]
    first = body(stream=True, system=system, tools=tools, metadata={"user_id": '{"session_id":"s"}'},
                 thinking={"type": "adaptive"}, output_config={"effort": "xhigh"}, context_management={"edits": []},
                 messages=[{"role": "user", "content": [{"type": "text", "text": "<system-reminder>r</system-reminder>"},
                                                        {"type": "text", "text": "Write a function",
                                                         "cache_control": {"type": "ephemeral"}}]},
                           {"role": "system", "content": "Agent types: none"}])

    async def go() -> None:
        async with running() as sim:
            events = (await request(sim, "POST", "/v1/messages?beta=true", first)).named_events()
            use = events[1][1]["content_block"]
            assert use["name"] == "get_weather"  # the web search tool is not offered to the model
            follow = dict(first, messages=first["messages"] + [
                {"role": "assistant", "content": [dict(use, input={"city": "sim", "days": 1})]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "is_error": True,
                                              "content": [{"type": "text", "text": "denied"}]},
                                             {"type": "text", "text": "<system-reminder>r</system-reminder>"}]}])
            events = (await request(sim, "POST", "/v1/messages?beta=true", follow)).named_events()
            assert events[1][1]["content_block"]["type"] == "text" and events[-2][1]["delta"]["stop_reason"] == "end_turn"
    run(go())
