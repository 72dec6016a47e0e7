"""The OpenAI Responses door through the router, against the simulator, with the official openai SDK: routed
like a chat completion, run on Ollama's own /v1/responses, stateless, and ``reasoning`` passed on only to a
model labelled able to think."""

from __future__ import annotations

import copy

import openai
import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, TEST_CONFIG, VIBE

from ollama_agent_router.simulator.run import Fault

CODE = "Write a Python function that reverses a string"
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": False,
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"] + ["response.output_text.delta"] * 8 + [
    "response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]


def sent(stack) -> list[dict]:
    return stack.chat_calls(path="/v1/responses")


def thinking_gptoss() -> dict:
    """The test config with gpt-oss labelled ``reasoning``, as the bundled profile labels it."""
    models = copy.deepcopy(TEST_CONFIG["models"])
    next(m for m in models if m["name"] == GPTOSS)["tags"] = ["reasoning", "heavy"]
    return {"models": models}


def test_create_is_routed_and_runs_on_ollamas_responses_api(stack):
    raw = stack.openai().responses.with_raw_response.create(model="gpt-5-codex", instructions="Be brief.", input=CODE,
                                                            store=False)
    done = raw.parse()
    assert raw.headers["x-router-selected-model"] == QWEN == done.model
    assert done.output_text == f"Simulated reply from {QWEN}." and done.model_extra["router"]["taskType"] == "code_generate"
    assert sent(stack)[-1]["body"] == {"model": QWEN, "instructions": "Be brief.", "input": CODE, "store": False,
                                       "stream": False}
    items = [{"role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi there"}]}]
    assert stack.openai().responses.create(model="auto", input=items).model == VIBE
    assert stack.openai().responses.create(model=DEEPSEEK, input="hi").model == DEEPSEEK


def test_stream_passes_every_event_through(stack):
    with stack.openai().responses.stream(model="auto", input=CODE) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == f"Simulated reply from {QWEN}." and final.id.startswith("resp_")
    r = stack.request("POST", "/v1/responses", {"model": "auto", "input": CODE, "stream": True})
    blocks = [b.split("\n") for b in r.body.decode().split("\n\n") if b]
    assert all(len(b) == 2 and b[0].startswith("event: ") and b[1].startswith("data: ") for b in blocks)  # no comments
    assert [b[0][len("event: "):] for b in blocks] == TEXT_EVENTS
    assert r.headers["x-router-selected-model"] == QWEN and r.headers["content-type"] == "text/event-stream"


def test_function_calling_round_trip(stack):
    client = stack.openai()
    first = client.responses.create(model="auto", input="What is the weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert first.model_extra["router"]["taskType"] == "tool_use" and first.model == first.model_extra["router"][
        "selectedModel"]
    history = [{"role": "user", "content": "What is the weather in Paris?"},
               {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    raw = client.responses.with_raw_response.create(model="auto", input=history, tools=[WEATHER], stream=True)
    final = [e for e in raw.parse() if e.type == "response.completed"][0].response
    assert final.output_text == f"Simulated reply from {final.model}." and raw.headers["x-router-task-type"] == "tool_use"
    assert sent(stack)[-1]["body"]["input"][2] == history[2]


def test_reasoning_goes_only_to_a_model_that_can_think(stack_factory):
    stack = stack_factory(thinking_gptoss())
    client = stack.openai()
    raw = client.responses.with_raw_response.create(model="auto", input="hi there", reasoning={"effort": "low"})
    assert raw.parse().output_text == f"Simulated reply from {VIBE}." and "reasoning" not in sent(stack)[-1]["body"]
    assert raw.headers["x-router-decision-reason"].endswith(f"reasoning not passed on: {VIBE} is not labelled "
                                                            "reasoning or thinking")
    thought = client.responses.create(model=GPTOSS, input="hi there", reasoning={"effort": "low"})
    assert [item.type for item in thought.output] == ["reasoning", "message"]
    assert sent(stack)[-1]["body"]["reasoning"] == {"effort": "low"}
    assert "reasoning not passed on" not in thought.model_extra["router"]["decisionReason"]


def test_stateful_fields_and_background_are_refused(stack):
    client = stack.openai()
    for field in ({"previous_response_id": "resp_1"}, {"conversation": "conv_1"}):
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="auto", input="hi", **field)
        assert e.value.code == "stateless_api" and "stateless" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="auto", input="hi", background=True)
    assert e.value.code == "background_unsupported"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="auto", input={"text": "hi"})  # type: ignore[arg-type]
    assert e.value.body["type"] == "invalid_request_error" and "input must be" in e.value.message
    assert sent(stack) == []
    assert stack.request("GET", "/v1/responses/resp_1").json()["error"]["code"] == "not_found"  # OpenAI's shape


def test_failover_and_a_broken_stream(stack):
    stack.sim.inject(QWEN, Fault(status=500))
    failed_over = stack.openai().responses.with_raw_response.create(model="auto", input=CODE)
    assert failed_over.headers["x-router-selected-model"] == DEEPSEEK
    stack.sim.inject(VIBE, Fault(mid_stream_error="boom"))
    with pytest.raises(openai.APIError) as e:
        with stack.openai().responses.stream(model=VIBE, input="hi") as stream:
            list(stream)
    assert "ended before completion" in e.value.message
