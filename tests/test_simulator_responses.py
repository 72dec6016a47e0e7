"""The simulator's OpenAI Responses door (wire-formats §8), checked with the official openai SDK and a raw
HTTP/1.1 client for the exact event sequence, numbering, key order and errors (and what Codex reads, §8.8)."""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest
from sim_support import CODER, EMBED, THINKER, broken_streams, oai, request, run, running

from ollama_agent_router.simulator.run import Fault

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"] + ["response.output_text.delta"] * 8 + [
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]


def body(**fields: Any) -> dict[str, Any]:
    return {"model": CODER, "input": "hello", **fields}


def sorted_keys(value: Any) -> bool:
    """Whether every object inside ``value`` has its keys in alphabetical order, as Ollama's stream writes them."""
    if isinstance(value, dict):
        return list(value) == sorted(value) and all(sorted_keys(v) for v in value.values())
    return all(sorted_keys(v) for v in value) if isinstance(value, list) else True


# ---- the official SDK -------------------------------------------------------------------------------

def test_sdk_create_and_stream_text() -> None:
    async def go() -> None:
        async with running() as sim, oai(sim) as c:
            done = await c.responses.create(model=CODER, instructions="Be brief.", input="say ECHO: hi there")
            assert re.fullmatch(r"resp_\d{1,6}", done.id) and done.status == "completed" and done.model == CODER
            assert done.output_text == "hi there" and done.instructions == "Be brief."
            assert done.usage.output_tokens == 8 and done.usage.total_tokens == done.usage.input_tokens + 8
            assert re.fullmatch(r"msg_\d{1,6}", done.output[0].id)
            async with c.responses.stream(model=CODER, input=[{"role": "user", "content": "hello"}]) as stream:
                deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
                final = await stream.get_final_response()
            assert "".join(deltas) == f"Simulated reply from {CODER}." == final.output_text
            thought = await c.responses.create(model=THINKER, input="hello", reasoning={"effort": "high"})
            assert [item.type for item in thought.output] == ["reasoning", "message"]
            assert thought.output[0].id == f"rs_{thought.id}" and thought.output[0].summary[0].text
            assert thought.reasoning.effort == "high"
            assert [call["path"] for call in sim.calls] == ["/v1/responses"] * 3
    run(go())


def test_sdk_function_call_round_trip_streamed_and_not() -> None:
    async def go() -> None:
        async with running() as sim, oai(sim) as c:
            first = await c.responses.create(model=CODER, input="weather in Paris?", tools=[WEATHER])
            call = first.output[0]
            assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
            assert call.id == f"fc_{first.id}_0" and re.fullmatch(r"call_[a-z0-9]{8}", call.call_id)
            assert json.loads(call.arguments) == {"city": "sim"}
            history = [{"role": "user", "content": "weather in Paris?"},
                       {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                       {"type": "function_call_output", "call_id": call.call_id, "output": "18°C, cloudy"}]
            answer = await c.responses.create(model=CODER, input=history, tools=[WEATHER])
            assert answer.output_text == f"Simulated reply from {CODER}."
            async with c.responses.stream(model=CODER, input="weather?", tools=[WEATHER]) as stream:
                args = [e.delta async for e in stream if e.type == "response.function_call_arguments.delta"]
                final = await stream.get_final_response()
            assert args == ['{"city":"sim"}'] and final.output[0].arguments == args[0]
            async with c.responses.stream(model=CODER, input=history, tools=[WEATHER]) as stream:
                assert (await stream.get_final_response()).output_text == f"Simulated reply from {CODER}."
    run(go())


def test_sdk_errors_have_openai_shape() -> None:
    async def go() -> None:
        async with running() as sim, oai(sim) as c:
            with pytest.raises(openai.NotFoundError) as nf:
                await c.responses.create(model="gpt-5", input="hi")
            assert nf.value.body == {"message": "model 'gpt-5' not found", "type": "not_found_error",
                                     "param": None, "code": None}
            with pytest.raises(openai.BadRequestError) as bad:
                await c.responses.create(model=CODER, input="hi", reasoning={"effort": "low"})
            assert bad.value.body["message"] == '"qwen2.5-coder:7b" does not support thinking'
            with pytest.raises(openai.BadRequestError):
                await c.responses.create(model=EMBED, input="hi")
            sim.inject(CODER, Fault(status=503))
            with pytest.raises(openai.InternalServerError) as busy:
                async with c.responses.stream(model=CODER, input="hi") as stream:
                    await stream.get_final_response()
            assert busy.value.status_code == 503 and busy.value.body["type"] == "api_error"
    run(go())


# ---- raw HTTP: exact events and shapes --------------------------------------------------------------

def test_stream_event_sequence_numbering_and_key_order() -> None:
    async def go() -> None:
        async with running() as sim:
            r = await request(sim, "POST", "/v1/responses", body(stream=True))
            assert r.status == 200 and r.headers["content-type"] == "text/event-stream" and r.complete
            events = r.named_events()
            assert [name for name, _ in events] == TEXT_EVENTS
            assert [data["sequence_number"] for _, data in events] == list(range(len(TEXT_EVENTS)))
            assert all(data["type"] == name and sorted_keys(data) and "error" not in data for name, data in events)
            created, completed = events[0][1]["response"], events[-1][1]["response"]
            assert (created["status"], created["output"], created["usage"], created["completed_at"]) == (
                "in_progress", [], None, None)
            assert completed["status"] == "completed" and isinstance(completed["id"], str)  # what Codex needs
            assert {k: completed["usage"][k] for k in ("input_tokens", "output_tokens", "total_tokens")} == {
                "input_tokens": 2, "output_tokens": 8, "total_tokens": 10}
            item_id = events[2][1]["item"]["id"]
            assert all(d.get("item_id", item_id) == item_id and d.get("output_index", 0) == 0 for _, d in events[2:])
            assert events[-2][1]["item"] == completed["output"][0]
            assert completed["output"][0]["content"][0]["text"] == f"Simulated reply from {CODER}."
    run(go())


def test_stream_reasoning_then_text_and_function_call() -> None:
    async def go() -> None:
        async with running() as sim:
            events = (await request(sim, "POST", "/v1/responses", body(model=THINKER, stream=True))).named_events()
            names = [name for name, _ in events]
            assert names[2:7] == ["response.output_item.added"] + ["response.reasoning_summary_text.delta"] * 3 + [
                "response.reasoning_summary_text.done"]
            reasoning = events[7][1]["item"]
            assert re.fullmatch(r"rs_\d{1,6}", reasoning["id"]) and reasoning["encrypted_content"] == "Thinking it over."
            assert events[8][1]["item"]["type"] == "message" and events[8][1]["output_index"] == 1
            events = (await request(sim, "POST", "/v1/responses", body(stream=True, tools=[WEATHER]))).named_events()
            assert [name for name, _ in events] == [
                "response.created", "response.in_progress", "response.output_item.added",
                "response.function_call_arguments.delta", "response.function_call_arguments.done",
                "response.output_item.done", "response.completed"]
            added, args_done = events[2][1]["item"], events[4][1]
            assert (added["arguments"], added["status"]) == ("", "in_progress") and re.fullmatch(r"fc_\d+_0", added["id"])
            assert "name" not in args_done and args_done["arguments"] == '{"city":"sim"}'
            assert events[-1][1]["response"]["tools"] == [{"description": "Weather for a city", "name": "get_weather",
                                                           "parameters": WEATHER["parameters"], "strict": False,
                                                           "type": "function"}]
    run(go())


def test_non_streamed_shape_and_ignored_state_fields() -> None:
    async def go() -> None:
        async with running() as sim:
            r = await request(sim, "POST", "/v1/responses", body(previous_response_id="resp_1", store=True,
                                                                 conversation="c", tool_choice="none", temperature=0.2,
                                                                 background=True, max_output_tokens=50))
            obj = r.json()
            assert r.headers["content-type"] == "application/json" and r.body.endswith(b"\n")
            assert list(obj) == [
                "id", "object", "created_at", "completed_at", "status", "incomplete_details", "model",
                "previous_response_id", "instructions", "output", "error", "tools", "tool_choice", "truncation",
                "parallel_tool_calls", "text", "top_p", "presence_penalty", "frequency_penalty", "top_logprobs",
                "temperature", "reasoning", "usage", "max_output_tokens", "max_tool_calls", "store", "background",
                "service_tier", "metadata", "safety_identifier", "prompt_cache_key"]
            assert (obj["previous_response_id"], obj["store"], obj["tool_choice"]) == (None, False, "auto")
            assert (obj["temperature"], obj["top_p"], obj["background"], obj["max_output_tokens"]) == (0.2, 1, True, 50)
            assert obj["output"][0]["content"] == [{"type": "output_text", "text": f"Simulated reply from {CODER}.",
                                                    "annotations": [], "logprobs": []}]
            cut = (await request(sim, "POST", "/v1/responses", body(max_output_tokens=2))).json()
            assert cut["status"] == "completed" and cut["incomplete_details"] is None  # never "incomplete"
    run(go())


def test_input_errors_are_400_with_ollama_texts() -> None:
    image = {"type": "input_image", "image_url": "https://example.com/cat.png"}
    cases = [
        (body(input=[{"role": "user", "content": "x"}, {"type": "custom_tool_call", "name": "apply_patch"}]),
         400, 'input[1]: unknown input item type: "custom_tool_call"'),
        (body(input=[{"content": "x"}]), 400, "input item missing required 'type' field"),
        (body(input=5), 400, "input must be a string or array: got number"),
        (body(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
         400, "file inputs are not currently supported"),
        (body(input=[{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "x"}]}]),
         400, "input[0]: content[1]: unknown content type: x"),
        (body(input=[{"role": "user", "content": [image]}]),
         400, "image URLs are not currently supported, please use base64 encoded data instead"),
        (body(input=[{"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"}]),
         400, "failed to parse function call arguments: json: cannot unmarshal array into Go value of type "
              "map[string]interface {}"),
        (body(reasoning={"effort": "extreme"}), 400,
         'invalid reasoning value: "extreme" (must be "high", "medium", "low", or "none")'),
        (body(model=""), 400, "model is required"),
        (body(model="nope", stream=True), 404, "model 'nope' not found"),
    ]

    async def go() -> None:
        async with running() as sim:
            for sent, status, message in cases:
                r = await request(sim, "POST", "/v1/responses", sent)
                assert (r.status, r.json()["error"]["message"]) == (status, message), sent
                assert r.json()["error"]["param"] is None and r.json()["error"]["code"] is None
            assert (await request(sim, "GET", "/v1/responses")).status == 405
            assert (await request(sim, "GET", "/v1/responses/resp_1")).status == 404
    run(go())


def test_failures_after_the_first_event_just_end_the_body() -> None:
    async def go() -> None:
        async with running() as sim:
            for names in await broken_streams(sim, "/v1/responses", body(stream=True)):
                assert names[0] == "response.created"
                assert "response.completed" not in names and "response.failed" not in names
            sim.inject(CODER, Fault(mid_stream_error="boom"))
            r = await request(sim, "POST", "/v1/responses", body())
            assert (r.status, r.json()["error"]["message"]) == (500, "boom")
    run(go())


def test_a_codex_shaped_turn() -> None:
    """The fields Codex sends (agent-clients.md, §8.10), all accepted; the replayed history is answered."""
    tools = [WEATHER, {"type": "custom", "name": "apply_patch", "description": "patch"}, {"type": "web_search"},
             {"type": "namespace", "name": "mcp", "tools": [{"type": "function", "name": "read", "parameters": None}]}]
    first = {"model": THINKER, "instructions": "You are Codex.", "stream": True, "tools": tools, "tool_choice": "auto",
             "parallel_tool_calls": False, "reasoning": {"effort": "medium", "summary": "auto"}, "store": False,
             "include": ["reasoning.encrypted_content"], "prompt_cache_key": "thread-1", "client_metadata": {"a": "b"},
             "input": [{"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "rules"}]},
                       {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Write it"}]}]}

    async def go() -> None:
        async with running() as sim:
            events = (await request(sim, "POST", "/v1/responses", first)).named_events()
            done = events[-1][1]["response"]
            assert events[-1][0] == "response.completed" and done["reasoning"] == {"effort": "medium", "summary": "auto"}
            call = next(item for item in done["output"] if item["type"] == "function_call")
            follow = dict(first, input=first["input"] + [
                {"type": "reasoning", "summary": [], "encrypted_content": "plain thinking"},
                {"type": "function_call", "call_id": call["call_id"], "name": call["name"], "arguments": call["arguments"]},
                {"type": "function_call_output", "call_id": call["call_id"], "output": [
                    {"type": "input_text", "text": "18°C"}]},
                {"type": "web_search_call", "status": "completed"}])
            events = (await request(sim, "POST", "/v1/responses", follow)).named_events()
            done = events[-1][1]["response"]
            assert [item["type"] for item in done["output"]] == ["reasoning", "message"]
            assert done["output"][1]["content"][0]["text"] == f"Simulated reply from {THINKER}."
    run(go())
