"""The zero-delay benchmark simulator still speaks Ollama's wire format to real clients."""

import asyncio

import openai
import pytest

from ollama_agent_router.simulator.fast import FastSimulator


def run(coro):
    return asyncio.run(coro)


async def with_sim(fn, tokens=5):
    sim = FastSimulator(["m:7b"], reply_tokens=tokens)
    await sim.start()
    try:
        client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="ollama", max_retries=0)
        return await fn(client, sim)
    finally:
        await sim.stop()


def test_json_reply_with_usage():
    async def fn(client, sim):
        return await client.chat.completions.create(model="m:7b", messages=[{"role": "user", "content": "hi"}])

    reply = run(with_sim(fn))
    assert reply.model == "m:7b" and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 5


def test_stream_in_the_current_flavour_with_usage_and_done():
    async def fn(client, sim):
        stream = await client.chat.completions.create(model="m:7b", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True, stream_options={"include_usage": True})
        return [chunk async for chunk in stream]

    chunks = run(with_sim(fn, tokens=200))
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 200 and content[0].choices[0].delta.role == "assistant"
    assert content[1].choices[0].delta.role is None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 200


def test_unknown_model_is_openai_shaped_404():
    async def fn(client, sim):
        with pytest.raises(openai.NotFoundError) as e:
            await client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "hi"}])
        return e.value

    err = run(with_sim(fn))
    assert "model 'ghost' not found" in str(err)


def test_anthropic_messages_json_stream_and_404():
    import anthropic

    async def fn(client, sim):
        c = anthropic.AsyncAnthropic(base_url=sim.url, api_key="ollama", max_retries=0)
        msg = await c.messages.create(model="m:7b", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        async with c.messages.stream(model="m:7b", max_tokens=8, messages=[{"role": "user", "content": "hi"}]) as s:
            pieces = [text async for text in s.text_stream]
            final = await s.get_final_message()
        with pytest.raises(anthropic.NotFoundError) as e:
            await c.messages.create(model="ghost", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
        return msg, pieces, final, e.value

    msg, pieces, final, missing = run(with_sim(fn, tokens=200))
    assert msg.content[0].text == "tok " * 200 and msg.usage.output_tokens == 200
    assert len(pieces) == 200 and final.stop_reason == "end_turn" and final.usage.output_tokens == 200
    assert missing.body["error"]["type"] == "not_found_error"
