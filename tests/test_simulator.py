"""The Ollama simulator over real loopback HTTP, checked with the official ollama and openai clients
and a raw HTTP/1.1 client for exact bytes; plus its pure wire helpers on plain data."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from types import SimpleNamespace

import httpx
import ollama
import openai
import pytest
from sim_support import (
    CODER,
    EMBED,
    WEATHER_TOOL,
    models,
    oai,
    read_chunk,
    read_head,
    request,
    run,
    running,
    send,
    until,
)

from ollama_agent_router.config.schema import ModelSpec
from ollama_agent_router.log import Logger
from ollama_agent_router.simulator.openai import ChatSseWriter
from ollama_agent_router.simulator.plan import Reply, sample_arguments, split_tokens
from ollama_agent_router.simulator.run import Fault, SimModel
from ollama_agent_router.simulator.sched import MIB
from ollama_agent_router.simulator.server import OllamaSimulator, run_simulator
from ollama_agent_router.simulator.wire import (
    BUSY,
    SimError,
    canonical_name,
    parse_go_duration,
    parse_keep_alive,
    rfc3339,
)

# ---- plain routes -----------------------------------------------------------------------------------------------

def test_root_version_unknown_path_and_wrong_method() -> None:
    async def go() -> None:
        async with running(version="0.11.4") as sim:
            r = await request(sim, "GET", "/")
            assert (r.status, r.body, r.headers["content-type"]) == (200, b"Ollama is running", "text/plain; charset=utf-8")
            r = await request(sim, "HEAD", "/")
            assert r.status == 200 and r.headers["content-length"] == str(len("Ollama is running"))
            assert (await request(sim, "GET", "/api/version")).json() == {"version": "0.11.4"}
            r = await request(sim, "GET", "/api/nothing")
            assert (r.status, r.body, r.headers["content-type"]) == (404, b"404 page not found", "text/plain")
            r = await request(sim, "GET", "/api/chat")
            assert (r.status, r.body) == (405, b"405 method not allowed")
            assert [c["path"] for c in sim.calls][-2:] == ["/api/nothing", "/api/chat"]
            assert [c["status"] for c in sim.calls][-2:] == [404, 405]
    run(go())


def test_tags_show_and_models_shapes() -> None:
    async def go() -> None:
        async with running() as sim:
            tags = (await request(sim, "GET", "/api/tags")).json()["models"]
            assert [m["name"] for m in tags] == [CODER, "llama3.2:latest", EMBED + ":latest", "qwq:32b"]
            stamps = [m["modified_at"] for m in tags]
            assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)", s) for s in stamps)
            async with ollama.AsyncClient(host=sim.url) as client:
                listed = (await client.list()).models
                assert [m.modified_at for m in listed] == sorted((m.modified_at for m in listed), reverse=True)
                assert listed[0].size == 4_700_000_000 and len(listed[0].digest) == 64
                assert listed[0].details.family == "qwen2" and listed[0].details.parent_model == ""
                shown = await client.show("qwq:32b")
                assert shown.capabilities == ["completion", "tools", "thinking"]
                assert shown.modelinfo["qwen2.context_length"] == 4096
                with pytest.raises(ollama.ResponseError) as err:
                    await client.show("nope:1b")
                assert err.value.status_code == 404 and err.value.error == "model 'nope:1b' not found"
            r = await request(sim, "POST", "/api/show", {})
            assert (r.status, r.json()) == (400, {"error": "model is required"})
            r = await request(sim, "POST", "/api/show", {"name": "llama3.2"})  # the legacy key
            assert r.status == 200 and r.json()["details"]["parameter_size"] == "3.2B"
            async with oai(sim) as client:
                page = await client.models.list()
                assert [m.id for m in page.data][:2] == [CODER, "llama3.2:latest"]
                assert page.data[0].owned_by == "library"
                one = await client.models.retrieve("llama3.2")
                assert one.id == "llama3.2"
                with pytest.raises(openai.NotFoundError) as nf:
                    await client.models.retrieve("nope")
                assert nf.value.body == {"message": "model 'nope' not found", "type": "not_found_error",
                                         "param": None, "code": None}
        async with running([]) as empty:
            assert (await request(empty, "GET", "/api/tags")).json() == {"models": []}
            assert (await request(empty, "GET", "/v1/models")).json() == {"object": "list", "data": None}
            assert (await request(empty, "GET", "/api/ps")).json() == {"models": []}
    run(go())


# ---- native chat and generate ----------------------------------------------------------------------------------

def test_native_chat_stream_non_stream_and_omitted_metrics() -> None:
    async def go() -> None:
        async with running() as sim, ollama.AsyncClient(host=sim.url) as client:
            parts = [p async for p in await client.chat(model=CODER, messages=[{"role": "user", "content": "hi"}],
                                                         stream=True)]
            assert len(parts) == 9 and all(not p.done and p.eval_count is None for p in parts[:-1])
            assert "".join(p.message.content for p in parts) == f"Simulated reply from {CODER}."
            final = parts[-1]
            assert final.done and final.done_reason == "stop" and final.eval_count == 8
            assert final.load_duration > 0 and final.total_duration >= final.load_duration
            assert sim.loads == [CODER]
            whole = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "say ECHO: exactly this"}])
            assert whole.message.content == "exactly this" and whole.model == "llama3.2"
            r = await request(sim, "POST", "/api/chat", {"model": CODER, "stream": False,
                                                        "messages": [{"role": "user", "content": ""}]})
            obj = r.json()
            assert r.headers["content-type"] == "application/json; charset=utf-8"
            assert "prompt_eval_count" not in obj and "prompt_eval_duration" not in obj and obj["eval_count"] == 8
            r = await request(sim, "POST", "/api/chat", {"model": CODER, "messages": [{"role": "user", "content": "x"}]})
            assert r.headers["content-type"] == "application/x-ndjson" and r.lines()[-1]["done"] is True
    run(go())


def test_native_generate_thinking_length_and_capability_errors() -> None:
    async def go() -> None:
        async with running() as sim, ollama.AsyncClient(host=sim.url) as client:
            out = await client.generate(model=CODER, prompt="write code")
            assert out.response == f"Simulated reply from {CODER}." and out.context and out.done_reason == "stop"
            cut = await client.generate(model=CODER, prompt="x", options={"num_predict": 3})
            assert cut.done_reason == "length" and cut.eval_count == 3
            lines = (await request(sim, "POST", "/api/chat", {"model": "qwq:32b",
                                                             "messages": [{"role": "user", "content": "q"}]})).lines()
            assert lines[0]["message"]["thinking"] and lines[0]["message"]["content"] == ""
            assert "".join(line["message"]["content"] for line in lines) == "Simulated reply from qwq:32b."
            errors = [
                ("/api/generate", {"model": CODER, "prompt": "x", "raw": True, "system": "s"},
                 400, "raw mode does not support template, system, or context"),
                ("/api/chat", {"model": CODER, "think": True, "messages": [{"role": "user", "content": "x"}]},
                 400, '"qwen2.5-coder:7b" does not support thinking'),
                ("/api/chat", {"model": EMBED, "messages": [{"role": "user", "content": "x"}]},
                 400, '"nomic-embed-text" does not support chat'),
                ("/api/generate", {"model": EMBED, "prompt": "x"}, 400, '"nomic-embed-text" does not support generate'),
                ("/api/chat", {"model": "Missing:7b", "messages": [{"role": "user", "content": "x"}]},
                 404, "model 'Missing:7b' not found"),
                ("/api/chat", {"messages": []}, 400, "model is required"),
                ("/api/chat", b"", 400, "missing request body"),
                ("/api/chat", b"xyz", 400, "invalid character 'x' looking for beginning of value"),
            ]
            for path, body, status, message in errors:
                r = await request(sim, "POST", path, body)
                assert (r.status, r.json()) == (status, {"error": message}), path
            nontools = OllamaSimulator([SimModel("gemma2", 5.0, capabilities=("completion",))])
            await nontools.start()
            try:
                r = await request(nontools, "POST", "/api/chat", {"model": "gemma2", "tools": [WEATHER_TOOL],
                                                                  "messages": [{"role": "user", "content": "x"}]})
                assert r.json() == {"error": "registry.ollama.ai/library/gemma2:latest does not support tools"}
            finally:
                await nontools.stop()
    run(go())


def test_native_tool_call_then_text_after_tool_result() -> None:
    async def go() -> None:
        async with running() as sim, ollama.AsyncClient(host=sim.url) as client:
            msgs = [{"role": "user", "content": "weather?"}]
            first = await client.chat(model=CODER, messages=msgs, tools=[WEATHER_TOOL])
            call = first.message.tool_calls[0]
            assert call.function.name == "get_weather"
            assert dict(call.function.arguments) == {"city": "sim", "days": 1, "unit": "celsius"}
            msgs += [first.message, {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]
            second = await client.chat(model=CODER, messages=msgs, tools=[WEATHER_TOOL])
            assert not second.message.tool_calls and second.message.content
    run(go())


# ---- load, unload, keep_alive ---------------------------------------------------------------------------------------

def test_load_and_unload_requests_and_keep_alive_refreshes() -> None:
    async def go() -> None:
        async with running() as sim:
            r = await request(sim, "POST", "/api/generate", {"model": CODER, "keep_alive": -1})
            obj = r.lines()[0]
            assert (obj["done"], obj["done_reason"], obj["response"]) == (True, "load", "")
            assert "total_duration" not in obj
            ps = (await request(sim, "GET", "/api/ps")).json()["models"]
            assert ps[0]["name"] == CODER and int(ps[0]["expires_at"][:4]) > 2300
            r = await request(sim, "POST", "/api/chat", {"model": "llama3.2", "messages": [], "stream": False})
            assert r.json()["done_reason"] == "load" and r.json()["message"] == {"role": "assistant", "content": ""}
            assert sim.loads == [CODER, "llama3.2:latest"]
            r = await request(sim, "POST", "/api/chat", {"model": CODER, "messages": [], "keep_alive": 0})
            assert r.lines()[0]["done_reason"] == "unload"
            assert list(sim.loaded()) == ["llama3.2:latest"]
            r = await request(sim, "POST", "/api/generate", {"model": "qwq:32b", "keep_alive": "0"})
            assert r.lines()[0]["done_reason"] == "unload"  # not loaded: still 200
            assert sim.keep_alive_refreshes == [(CODER, "-1"), ("llama3.2:latest", "5m"), (CODER, "0"),
                                                ("qwq:32b", "0")]
            r = await request(sim, "POST", "/api/generate", {"model": "nope", "keep_alive": 0})
            assert r.status == 404
        async with running(default_keep_alive="300") as sim:  # integer seconds, as OLLAMA_KEEP_ALIVE allows
            await request(sim, "POST", "/api/generate", {"model": CODER})
            assert sim.loaded()[CODER]["keep_alive"] == 300
    run(go())


def test_keep_alive_expiry_unloads_and_bad_duration_is_400() -> None:
    async def go() -> None:
        async with running() as sim, ollama.AsyncClient(host=sim.url) as client:
            await client.chat(model=CODER, messages=[{"role": "user", "content": "x"}], keep_alive="200ms")
            info = sim.loaded().get(CODER)  # may already be gone on a slow machine
            assert info is None or info["expires_at"] - time.monotonic() <= 0.2
            await until(lambda: not sim.loaded(), timeout=3.0)
            r = await request(sim, "POST", "/api/chat", {"model": CODER, "keep_alive": "300",
                                                        "messages": [{"role": "user", "content": "x"}]})
            assert (r.status, r.json()) == (400, {"error": 'time: missing unit in duration "300"'})
            assert not sim.loads[1:]  # nothing loaded for the rejected request
            await client.chat(model=CODER, messages=[{"role": "user", "content": "x"}], keep_alive=0)
            assert not sim.loaded()
    run(go())


def test_runner_option_change_reloads() -> None:
    async def go() -> None:
        async with running() as sim:
            msg = [{"role": "user", "content": "x"}]
            await request(sim, "POST", "/api/chat", {"model": CODER, "messages": msg, "stream": False})
            await request(sim, "POST", "/api/chat", {"model": CODER, "messages": msg, "stream": False,
                                                    "options": {"num_ctx": 16384}})
            assert sim.loads == [CODER, CODER]
            ps = (await request(sim, "GET", "/api/ps")).json()["models"]
            assert [m["context_length"] for m in ps] == [16384]
    run(go())


# ---- OpenAI layer --------------------------------------------------------------------------------------------------

def test_openai_non_stream_and_current_stream_with_usage() -> None:
    async def go() -> None:
        async with running() as sim, oai(sim) as client:
            msgs = [{"role": "user", "content": "hello"}]
            done = await client.chat.completions.create(model="llama3.2", messages=msgs)
            assert re.fullmatch(r"chatcmpl-\d{1,3}", done.id) and int(done.id[9:]) <= 998
            assert done.system_fingerprint == "fp_ollama" and done.model == "llama3.2"
            assert done.choices[0].message.content == "Simulated reply from llama3.2."
            assert done.usage.completion_tokens == 8 and done.usage.total_tokens == done.usage.prompt_tokens + 8
            stream = await client.chat.completions.create(model=CODER, messages=msgs, stream=True,
                                                          stream_options={"include_usage": True})
            chunks = [c async for c in stream]
            assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
            assert chunks[0].choices[0].delta.role == "assistant"
            assert all(c.choices[0].delta.role is None for c in chunks[1:-1])
            finish = chunks[-2].choices[0]
            assert finish.finish_reason == "stop" and finish.delta.content is None
            assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
            raw = await request(sim, "POST", "/v1/chat/completions", {"model": CODER, "messages": msgs, "stream": True})
            events = raw.events()
            assert raw.headers["content-type"] == "text/event-stream" and events[-1] == "[DONE]"
            assert all("usage" not in json.loads(e) for e in events[:-1])
            r = await request(sim, "POST", "/v1/chat/completions", {"model": CODER, "messages": []})
            assert (r.status, r.json()["error"]["message"]) == (400, "[] is too short - 'messages'")
            capped = await client.chat.completions.create(model=CODER, messages=msgs, max_tokens=2)
            assert capped.choices[0].finish_reason == "length" and capped.usage.completion_tokens == 2
    run(go())


def test_openai_legacy_stream_flavour() -> None:
    async def go() -> None:
        async with running(stream_flavour="legacy") as sim:
            body = {"model": CODER, "messages": [{"role": "user", "content": "hi"}], "stream": True,
                    "stream_options": {"include_usage": True}}
            events = (await request(sim, "POST", "/v1/chat/completions", body)).events()
            chunks = [json.loads(e) for e in events[:-1]]
            assert events[-1] == "[DONE]"
            deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
            assert all(d["role"] == "assistant" and isinstance(d["content"], str) for d in deltas)
            assert chunks[-2]["choices"][0] == {"index": 0, "delta": {"role": "assistant", "content": ""},
                                                "finish_reason": "stop"}
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
            async with oai(sim) as client:
                stream = await client.chat.completions.create(model=CODER, messages=body["messages"], stream=True)
                text = "".join([c.choices[0].delta.content or "" async for c in stream])
                assert text == f"Simulated reply from {CODER}."
    run(go())


def test_openai_tool_call_stream_both_flavours() -> None:
    async def go(flavour: str) -> None:
        async with running(stream_flavour=flavour) as sim, oai(sim) as client:
            stream = await client.chat.completions.create(
                model=CODER, messages=[{"role": "user", "content": "weather in Tokyo?"}], tools=[WEATHER_TOOL],
                stream=True)
            chunks = [c async for c in stream]
            with_calls = [c for c in chunks if c.choices and c.choices[0].delta.tool_calls]
            assert len(with_calls) == 1
            call = with_calls[0].choices[0].delta.tool_calls[0]
            assert call.index == 0 and call.type == "function" and re.fullmatch(r"call_[a-z0-9]{8}", call.id)
            assert json.loads(call.function.arguments) == {"city": "sim", "days": 1, "unit": "celsius"}
            assert chunks[-1].choices[0].finish_reason == "tool_calls"
            done = await client.chat.completions.create(
                model=CODER, messages=[{"role": "user", "content": "x"}], tools=[WEATHER_TOOL])
            assert done.choices[0].finish_reason == "tool_calls" and done.choices[0].message.content == ""
    run(go("current"))
    run(go("legacy"))


def test_openai_completions_and_reasoning() -> None:
    async def go() -> None:
        async with running() as sim, oai(sim) as client:
            done = await client.completions.create(model=CODER, prompt="ECHO: abc")
            assert done.id.startswith("cmpl-") and done.choices[0].text == "abc"
            body = {"model": CODER, "prompt": "x", "stream": True, "stream_options": {"include_usage": True}}
            events = (await request(sim, "POST", "/v1/completions", body)).events()
            chunks = [json.loads(e) for e in events[:-1]]
            assert all(c["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
                       for c in chunks[:-1])
            assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 8
            r = await request(sim, "POST", "/v1/chat/completions", {"model": "qwq:32b", "reasoning_effort": "high",
                                                                   "messages": [{"role": "user", "content": "q"}]})
            assert r.json()["choices"][0]["message"]["reasoning"]
            r = await request(sim, "POST", "/v1/chat/completions", {"model": "qwq:32b", "reasoning_effort": "none",
                                                                   "messages": [{"role": "user", "content": "q"}]})
            assert "reasoning" not in r.json()["choices"][0]["message"]
    run(go())


def test_embeddings_native_legacy_and_openai() -> None:
    async def go() -> None:
        async with running() as sim:
            async with ollama.AsyncClient(host=sim.url) as client:
                out = await client.embed(model=EMBED, input=["a", "b", "a"])
                vecs = out.embeddings
                assert len(vecs) == 3 and len(vecs[0]) == 384 and vecs[0] == vecs[2] and vecs[0] != vecs[1]
                assert abs(sum(v * v for v in vecs[0]) - 1.0) < 1e-9 and out.prompt_eval_count == 3
                assert len((await client.embeddings(model=EMBED, prompt="a")).embedding) == 384
            r = await request(sim, "POST", "/api/embed", {"model": EMBED, "input": ""})
            assert r.json() == {"model": EMBED, "embeddings": []}
            r = await request(sim, "POST", "/api/embed", {"model": EMBED, "input": [1, 2]})
            assert (r.status, r.json()) == (400, {"error": "invalid input type"})
            async with oai(sim) as client:
                res = await client.embeddings.create(model=EMBED, input=["x", "y"], dimensions=8)
                assert [d.index for d in res.data] == [0, 1] and len(res.data[0].embedding) == 8
                b64 = await client.embeddings.create(model=EMBED, input="x")  # the SDK asks for base64
                assert len(b64.data[0].embedding) == 384
                with pytest.raises(openai.BadRequestError):
                    await client.embeddings.create(model=EMBED, input=[])
            assert sim.peak_concurrency[EMBED + ":latest"] == 1
    run(go())


# ---- scheduler -----------------------------------------------------------------------------------------------------

def test_queue_full_is_503_with_two_spaces() -> None:
    async def go() -> None:
        async with running(num_parallel=1, max_queue=1, tokens_per_second=10) as sim:
            body = {"model": CODER, "messages": [{"role": "user", "content": "x"}]}
            reader, writer = await send(sim, "POST", "/api/chat", body)
            assert (await read_head(reader))[0] == 200  # holds the only slot while it streams
            waiting = asyncio.create_task(request(sim, "POST", "/api/chat", dict(body, stream=False)))
            await until(lambda: sim.sched.waiting == 1)
            r = await request(sim, "POST", "/api/chat", body)
            assert (r.status, r.json()) == (503, {"error": BUSY})
            assert "please try again.  maximum" in BUSY
            async with oai(sim) as client:
                with pytest.raises(openai.InternalServerError) as err:
                    await client.chat.completions.create(model=CODER, messages=body["messages"])
            assert err.value.status_code == 503
            assert err.value.body == {"message": BUSY, "type": "api_error", "param": None, "code": None}
            writer.close()
            assert (await waiting).status == 200
    run(go())


def test_peak_concurrency_honours_num_parallel_and_loads_are_shared() -> None:
    async def go() -> None:
        async with running(num_parallel=2, tokens_per_second=200, load_seconds_per_gb=0.05) as sim:
            async with oai(sim) as client:
                replies = await asyncio.gather(*(
                    client.chat.completions.create(model=CODER, messages=[{"role": "user", "content": f"ECHO:{i}"}])
                    for i in range(5)))
            assert sorted(r.choices[0].message.content for r in replies) == ["0", "1", "2", "3", "4"]
            assert sim.peak_concurrency[CODER] == 2 and sim.in_flight[CODER] == 0
            assert sim.loads == [CODER]  # five cold requests, one load
    run(go())


def test_load_duration_counts_the_load_and_ps_can_block() -> None:
    async def go() -> None:
        async with running(load_seconds_per_gb=0.05) as sim:  # 2 GB model: 0.1 s load
            async with ollama.AsyncClient(host=sim.url) as client:
                cold = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
                warm = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}])
            assert cold.load_duration >= 100_000_000 > warm.load_duration
            loading = asyncio.create_task(request(sim, "POST", "/api/generate", {"model": CODER}))
            await until(lambda: CODER in sim.loaded())
            ps = (await request(sim, "GET", "/api/ps")).json()["models"]
            assert CODER in [m["name"] for m in ps] and sim.loaded()[CODER]["state"] == "loading"
            await loading
        async with running(load_seconds_per_gb=0.05, ps_blocks_while_loading=True) as sim:
            loading = asyncio.create_task(request(sim, "POST", "/api/generate", {"model": CODER}))
            await until(lambda: CODER in sim.loaded())
            await request(sim, "GET", "/api/ps")
            assert sim.loaded()[CODER]["state"] == "loaded"
            await loading
    run(go())


def test_eviction_when_vram_is_short() -> None:
    big = [SimModel(f"big{i}:10b", 10.0) for i in range(3)]  # 11.5 GB each when loaded

    async def go() -> None:
        async with running(big, gpu_total_mb=16384) as sim:  # one fits, two don't
            for name in ("big0:10b", "big1:10b"):
                await request(sim, "POST", "/api/generate", {"model": name})
            assert sim.loads == ["big0:10b", "big1:10b"] and list(sim.loaded()) == ["big1:10b"]
        async with running(big, gpu_total_mb=32768) as sim:  # two fit: the shortest keep-alive goes, not the oldest
            await request(sim, "POST", "/api/generate", {"model": "big0:10b", "keep_alive": -1})
            await request(sim, "POST", "/api/generate", {"model": "big1:10b", "keep_alive": "1m"})
            await request(sim, "POST", "/api/generate", {"model": "big2:10b"})
            assert sorted(sim.loaded()) == ["big0:10b", "big2:10b"]
        async with running(models(), max_loaded_models=1, tokens_per_second=10) as sim:
            reader, writer = await send(sim, "POST", "/api/chat",
                                        {"model": CODER, "messages": [{"role": "user", "content": "x"}]})
            await read_head(reader)
            second = asyncio.create_task(request(sim, "POST", "/api/generate", {"model": "llama3.2"}))
            await until(lambda: sim.sched.waiting == 1)
            assert list(sim.loaded()) == [CODER]  # a busy runner is waited for, not killed
            while await read_chunk(reader) is not None:
                pass
            writer.close()
            assert (await second).status == 200 and list(sim.loaded()) == ["llama3.2:latest"]
    run(go())


def test_partial_offload_when_a_model_cannot_fit() -> None:
    async def go() -> None:
        async with running([SimModel("huge:70b", 40.0), SimModel("small:1b", 1.0)], gpu_total_mb=24576) as sim:
            await request(sim, "POST", "/api/generate", {"model": "small:1b"})
            small = (await request(sim, "GET", "/api/ps")).json()["models"][0]
            assert small["size_vram"] == small["size"] == 1_150_000_000
            await request(sim, "POST", "/api/generate", {"model": "huge:70b"})
            ps = (await request(sim, "GET", "/api/ps")).json()["models"]
            assert [m["name"] for m in ps] == ["huge:70b"]  # alone, and still split between CPU and GPU
            assert ps[0]["size"] == 46_000_000_000 and 0 < ps[0]["size_vram"] < ps[0]["size"]
            assert ps[0]["size_vram"] == sim.loaded()["huge:70b"]["size_vram"]
    run(go())


def test_gpu_backend_free_memory_follows_size_vram() -> None:
    pytest.importorskip("ollama_agent_router.gpu")

    async def go() -> None:
        async with running([SimModel("huge:70b", 40.0), SimModel("small:1b", 1.0)], gpu_total_mb=24576,
                           tokens_per_second=10) as sim:
            gpu = sim.gpu_backend()
            assert gpu.source == "simulated"
            idle = gpu.read_devices()[0]
            assert idle.total_mb == 24576 and idle.reserved_mb > 0 and idle.used_mb == 0
            assert idle.free_mb == idle.total_mb - idle.reserved_mb and idle.util_pct == 0
            reader, writer = await send(sim, "POST", "/api/generate", {"model": "small:1b", "prompt": "x"})
            await read_head(reader)
            busy = gpu.read_devices()[0]
            writer.close()
            small = sim.loaded()["small:1b"]["size_vram"]
            assert idle.free_mb - busy.free_mb == pytest.approx(small / MIB) and busy.used_mb == pytest.approx(small / MIB)
            assert busy.util_pct == 100
            await request(sim, "POST", "/api/generate", {"model": "huge:70b"})
            assert gpu.read_devices()[0].free_mb == pytest.approx(0, abs=1e-6)  # the split model takes it all
    run(go())


# ---- faults and disconnects --------------------------------------------------------------------------------------------

def test_status_fault_and_slow_first_byte() -> None:
    async def go() -> None:
        async with running() as sim:
            body = {"model": CODER, "messages": [{"role": "user", "content": "x"}], "stream": False}
            sim.inject(CODER, Fault(status=500))
            r = await request(sim, "POST", "/api/chat", body)
            assert (r.status, r.json()) == (500, {"error": "llama runner process has terminated: exit status 2"})
            assert (await request(sim, "POST", "/api/chat", body)).status == 200  # consumed
            sim.inject("*", Fault(status=503, times=None))
            async with oai(sim) as client:
                for _ in range(2):
                    with pytest.raises(openai.InternalServerError) as err:
                        await client.chat.completions.create(model="llama3.2", messages=body["messages"])
                    assert err.value.body["message"] == BUSY
            sim.clear_faults()
            sim.inject(CODER, Fault(first_byte_delay_s=0.3))
            started = time.monotonic()
            assert (await request(sim, "POST", "/api/chat", body)).status == 200
            assert time.monotonic() - started >= 0.3
            sim.inject("/api/ps", Fault(first_byte_delay_s=5))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(request(sim, "GET", "/api/ps"), 0.2)
    run(go())


def test_drop_after_chunks_truncates_the_stream() -> None:
    async def go() -> None:
        async with running() as sim, oai(sim) as client:
            sim.inject(CODER, Fault(drop_after_chunks=2))
            stream = await client.chat.completions.create(model=CODER, stream=True,
                                                          messages=[{"role": "user", "content": "x"}])
            got = []
            with pytest.raises((httpx.HTTPError, openai.APIError)):
                async for chunk in stream:
                    got.append(chunk)
            assert len(got) <= 2
            sim.inject(CODER, Fault(drop_after_chunks=0))
            with pytest.raises(openai.APIConnectionError):
                await client.chat.completions.create(model=CODER, messages=[{"role": "user", "content": "x"}])
            sim.inject(CODER, Fault(drop_after_chunks=3))
            r = await request(sim, "POST", "/api/chat", {"model": CODER, "messages": [{"role": "user", "content": "x"}]})
            assert not r.complete and len(r.lines()) == 3
            assert sim.cancelled == 0 and sim.in_flight[CODER] == 0
    run(go())


def test_no_done_and_mid_stream_error() -> None:
    async def go() -> None:
        async with running() as sim:
            msgs = [{"role": "user", "content": "x"}]
            sim.inject(CODER, Fault(no_done=True))
            r = await request(sim, "POST", "/v1/chat/completions", {"model": CODER, "messages": msgs, "stream": True})
            chunks = [json.loads(e) for e in r.events()]
            assert r.complete and "[DONE]" not in r.events()
            assert all(c["choices"][0]["finish_reason"] is None for c in chunks)
            assert chunks[-1]["choices"][0]["delta"] == {"content": ""}  # the decoded error line
            sim.inject(CODER, Fault(no_done=True))
            async with oai(sim) as client:
                stream = await client.chat.completions.create(model=CODER, messages=msgs, stream=True)
                assert [c.choices[0].finish_reason async for c in stream][-1] is None  # ends silently
            sim.inject(CODER, Fault(no_done=True))
            lines = (await request(sim, "POST", "/api/chat", {"model": CODER, "messages": msgs})).lines()
            assert lines and not any(line.get("done") for line in lines) and "error" not in lines[-1]
            sim.inject(CODER, Fault(mid_stream_error="CUDA error: out of memory"))
            async with ollama.AsyncClient(host=sim.url) as client:
                seen = []
                with pytest.raises(ollama.ResponseError) as err:
                    async for part in await client.chat(model=CODER, messages=msgs, stream=True):
                        seen.append(part)
                assert err.value.error == "CUDA error: out of memory" and 0 < len(seen) < 8
                sim.inject(CODER, Fault(mid_stream_error="boom"))
                with pytest.raises(ollama.ResponseError) as err:
                    await client.chat(model=CODER, messages=msgs)
                assert (err.value.status_code, err.value.error) == (500, "boom")
    run(go())


def test_client_disconnect_frees_the_slot_and_counts() -> None:
    async def go() -> None:
        async with running(num_parallel=1, tokens_per_second=10) as sim:
            body = {"model": CODER, "messages": [{"role": "user", "content": "x"}]}
            reader, writer = await send(sim, "POST", "/api/chat", body)
            await read_head(reader)
            assert await read_chunk(reader)
            _queued_reader, queued = await send(sim, "POST", "/api/chat", body)
            await until(lambda: sim.sched.waiting == 1)
            queued.close()  # gone while queued
            await until(lambda: sim.cancelled == 1 and sim.sched.waiting == 0)
            writer.close()  # gone while generating
            await until(lambda: sim.cancelled == 2 and sim.in_flight[CODER] == 0)
            assert sim.loaded()[CODER]["refs"] == 0
            async with ollama.AsyncClient(host=sim.url) as client:
                reply = await asyncio.wait_for(client.chat(model=CODER, messages=body["messages"]), 2)
            assert reply.done and sim.cancelled == 2
    run(go())


def test_set_down_and_back_up() -> None:
    async def go() -> None:
        async with running(tokens_per_second=10) as sim:
            await request(sim, "POST", "/api/generate", {"model": CODER})
            reader, writer = await send(sim, "POST", "/api/chat",
                                        {"model": CODER, "messages": [{"role": "user", "content": "x"}]})
            await read_head(reader)
            await sim.set_down(True)
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                while await read_chunk(reader) is not None:
                    pass
            writer.close()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", sim.port)
            assert not sim.loaded() and sim.cancelled == 0
            await sim.set_down(False)
            assert (await request(sim, "GET", "/")).status == 200
            async with ollama.AsyncClient(host=sim.url) as client:
                await client.chat(model=CODER, messages=[{"role": "user", "content": "x"}])
            assert sim.loads == [CODER, CODER]
    run(go())


# ---- construction and the CLI entry point -----------------------------------------------------------------------------

def test_from_config_and_run_simulator() -> None:
    spec = {"max_concurrent": 1, "max_context": 32768, "timeout_ms": 1000}
    cfg = SimpleNamespace(
        models=(ModelSpec(name="qwen2.5-coder:14b", size_gb=9.0, default_context=8192,
                          purpose=("agentic_reasoning",), **spec),
                ModelSpec(name="bge-m3", size_gb=1.2, default_context=8192, purpose=("embeddings",), **spec),
                ModelSpec(name="gpt-oss:20b", size_gb=14, default_context=8192, tags=("reasoning",), **spec)),
        gpu=SimpleNamespace(vram_total_mb=0, name=None),
    )
    sim = OllamaSimulator.from_config(cfg, num_parallel=2)
    assert sim.gpu_total_mb == 24576 and sim.num_parallel == 2
    coder, embed = sim.models["qwen2.5-coder:14b"], sim.models["bge-m3:latest"]
    assert (coder.family, coder.parameter_size, coder.context_length) == ("qwen2", "14B", 8192)
    assert coder.capabilities == ("completion", "tools") and embed.capabilities == ("embedding",)
    assert sim.models["gpt-oss:20b"].capabilities == ("completion", "tools", "thinking")

    async def go() -> None:
        stream = io.StringIO()
        task = asyncio.create_task(run_simulator(None, "127.0.0.1", 0, Logger("info", stream)))
        await until(lambda: "simulator_listening" in stream.getvalue())
        url = next(json.loads(line)["url"] for line in stream.getvalue().splitlines() if "simulator_listening" in line)
        reader, writer = await asyncio.open_connection("127.0.0.1", int(url.rsplit(":", 1)[1]))
        writer.write(b"GET /api/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert b'{"version":"0.33.0"}' in await reader.read()
        writer.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    run(go())


# ---- pure helpers ------------------------------------------------------------------------------------------------------

def test_go_durations_and_keep_alive() -> None:
    assert parse_go_duration("1h30m") == 5400 and parse_go_duration("-1m") == -60
    assert parse_go_duration("0") == 0 and parse_go_duration("1.5s") == 1.5 and parse_go_duration("200ms") == 0.2
    for text, message in [("300", 'time: missing unit in duration "300"'), ("5x", 'time: unknown unit "x" in duration "5x"'),
                          ("", 'time: invalid duration ""'), ("m", 'time: invalid duration "m"')]:
        with pytest.raises(SimError) as err:
            parse_go_duration(text)
        assert (err.value.status, err.value.message) == (400, message)
    assert parse_keep_alive(-1) is None and parse_keep_alive("-5m") is None
    assert parse_keep_alive(0) == 0 and parse_keep_alive(2.5) == 2.5 and parse_keep_alive("10m") == 600


def test_names_timestamps_tokens_and_arguments() -> None:
    assert canonical_name("llama3") == "llama3:latest"
    assert canonical_name("registry.ollama.ai/library/qwen2.5:7b") == "qwen2.5:7b"
    assert canonical_name("hf.co/bartowski/x") == "hf.co/bartowski/x:latest"
    assert rfc3339(1_700_000_000_123_456_789, local=False) == "2023-11-14T22:13:20.123456789Z"
    assert rfc3339(1_700_000_000_100_000_000, local=False) == "2023-11-14T22:13:20.1Z"
    assert rfc3339(1_700_000_000_000_000_000, local=False) == "2023-11-14T22:13:20Z"
    pieces = split_tokens("Simulated reply.", 8)
    assert len(pieces) == 8 and "".join(pieces) == "Simulated reply." and all(pieces)
    assert split_tokens("ab", 8) == ["a", "b"] and split_tokens("", 8) == []
    schema = WEATHER_TOOL["function"]["parameters"]
    assert sample_arguments(schema) == {"city": "sim", "days": 1, "unit": "celsius"}
    assert sample_arguments({"type": "object", "required": ["xs"], "properties": {"xs": {"type": "array",
                            "items": {"type": "number"}}}}) == {"xs": [1.5]}


def test_finish_reasons_per_flavour() -> None:
    import random

    call = [{"id": "call_abcdefgh", "function": {"index": 0, "name": "f", "arguments": {}}}]
    for flavour, after_length in (("current", "length"), ("legacy", "tool_calls")):
        writer = ChatSseWriter("m", flavour, False, random.Random(1))
        writer.event("tool_calls", call)
        final = json.loads(writer.finish(Reply([], done_reason="length"), {"eval_count": 1})[0][len("data: "):])
        assert final["choices"][0]["finish_reason"] == after_length
