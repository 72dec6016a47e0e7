"""The front door for every local client: OpenAI model listing, pinning, embeddings and completions, and the
Ollama-native API driven by the official ``ollama`` Python client, all against the simulator over HTTP."""

from __future__ import annotations

import http.client
import json

import ollama
import openai
import pytest
from conftest import DEEPSEEK, GPTOSS, QWEN, TEST_CONFIG, VIBE, assert_no_null, chat_body, wait_for

from ollama_agent_router.simulator.run import Fault

EMBED = "nomic-embed-text:latest"
EMBED_MODEL = {"name": EMBED, "sizeGb": 0.3, "purpose": ["embedding"], "priority": 10, "maxConcurrent": 2,
               "defaultContext": 2048, "maxContext": 2048, "timeoutMs": 10000, "costClass": "low",
               "allowWhenBusy": True}


def with_embedder() -> dict:
    return {"models": TEST_CONFIG["models"] + [EMBED_MODEL]}


def generation_calls(stack, path: str) -> list[dict]:
    return [c for c in stack.sim.calls if c["path"] == path]


# ---- OpenAI listing and pinning -------------------------------------------------------------------------

def test_openai_model_list_and_retrieve(stack):
    client = stack.openai()
    listed = client.models.list()
    assert [m.id for m in listed.data] == ["auto", VIBE, QWEN, DEEPSEEK, GPTOSS]
    assert listed.data[0].owned_by == "ollama-agent-router" and all(m.object == "model" for m in listed.data)
    assert client.models.retrieve(VIBE).owned_by == "B-A-M-N"  # the SDK sends the slash encoded
    assert client.models.retrieve(QWEN).owned_by == "library"
    assert client.models.retrieve("auto").id == "auto"
    unencoded = stack.request("GET", f"/v1/models/{VIBE}")
    assert unencoded.status == 200 and unencoded.json()["id"] == VIBE
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_configured_model_or_alias_pins_and_still_fails_over(stack_factory):
    models = [dict(m) for m in TEST_CONFIG["models"]]
    models[2]["aliases"] = ["reviewer"]
    stack = stack_factory({"models": models})
    client = stack.openai()
    reply = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "Hello there"}])
    router = reply.model_extra["router"]
    assert router["selectedModel"] == QWEN and router["pinned"] is True  # "Hello there" alone routes to VIBE
    alias = client.chat.completions.create(model="reviewer", messages=[{"role": "user", "content": "Hello there"}])
    assert alias.model_extra["router"]["selectedModel"] == DEEPSEEK
    stack.sim.inject(QWEN, Fault(status=500))
    failed_over = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": "Hello there"}])
    router = failed_over.model_extra["router"]
    assert router["pinned"] is True and router["selectedModel"] != QWEN
    assert router["attempts"][0] == {"model": QWEN, "outcome": "http_500", "detail": router["attempts"][0]["detail"]}


def test_unknown_model_names_route_by_default(stack):
    client = stack.openai()
    reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello there"}])
    router = reply.model_extra["router"]
    assert router["selectedModel"] == VIBE and "pinned" not in router


def test_unknown_model_names_can_be_rejected(stack_factory):
    stack = stack_factory({"router": {"unknownModel": "reject"}})
    with pytest.raises(openai.NotFoundError):
        stack.openai().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=stack.url).chat(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert stack.openai().chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])


# ---- Ollama-native API with the official client ---------------------------------------------------------

def test_ollama_client_lists_auto_and_passes_ps_and_version_through(stack):
    client = ollama.Client(host=stack.url)
    listed = client.list()
    assert listed.models[0].model == "auto" and listed.models[0].details.family == "router"
    assert {m.model for m in listed.models[1:]} == {VIBE, QWEN, DEEPSEEK, GPTOSS}
    raw = stack.request("GET", "/api/tags").json()["models"][0]
    assert raw["name"] == raw["model"] == "auto" and len(raw["digest"]) == 64
    assert stack.request("GET", "/api/version").json() == {"version": stack.sim.version}  # the client has no call
    client.chat(model="auto", messages=[{"role": "user", "content": "Hello there"}])
    assert VIBE in [m.model for m in client.ps().models]


def test_ollama_client_chat_is_routed(stack):
    client = ollama.Client(host=stack.url)
    reply = client.chat(model="auto", messages=[{"role": "user", "content": "Write a Python function to parse JSON. "
                                                                              "ECHO: def parse(): pass"}],
                        stream=False)
    assert reply.message.content == "def parse(): pass" and reply.done
    call = generation_calls(stack, "/api/chat")[-1]
    assert call["model"] == QWEN and "router" not in call["body"] and call["body"]["stream"] is False
    raw = stack.request("POST", "/api/chat", {"model": "auto", "stream": False,
                                              "messages": [{"role": "user", "content": "Hello there"}],
                                              "router": {"explain": True}})
    assert raw.headers["x-router-selected-model"] == VIBE
    router = raw.json()["router"]
    assert router["taskType"] == "simple_chat" and router["candidates"][0]["name"] == VIBE


def test_ollama_client_chat_stream_is_relayed_chunk_by_chunk(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 10.0})
    client = ollama.Client(host=stack.url)
    words = " ".join(f"w{i}" for i in range(8))
    stream = client.chat(model="auto", messages=[{"role": "user", "content": f"Hello there. ECHO: {words}"}],
                         stream=True)
    first = next(stream)
    # The first line reached us while the simulator was still generating the rest (0.1 s per token).
    assert stack.run(lambda: stack.sim.sched.generating()) == 1
    chunks = [first, *stream]
    assert len(chunks) > 3 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.message.content for c in chunks) == words
    assert generation_calls(stack, "/api/chat")[-1]["body"].get("stream", True) is True


def test_native_stream_headers_and_content_type(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    conn.request("POST", "/api/chat", json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
                 {"content-type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type") == "application/x-ndjson"
    assert resp.getheader("x-router-selected-model") == VIBE
    lines = [json.loads(line) for line in resp.read().splitlines()]
    assert lines[-1]["done"] is True and all("router" not in line for line in lines)


def test_ollama_client_generate_is_routed(stack):
    client = ollama.Client(host=stack.url)
    reply = client.generate(model="auto", system="You fix code.",
                            prompt="Fix this Python bug: ```x = [1,2\n``` ECHO: ok")
    assert reply.response == "ok"
    call = generation_calls(stack, "/api/generate")[-1]
    assert call["model"] == QWEN and call["body"]["system"] == "You fix code."
    text = "".join(c.response for c in client.generate(model="auto", prompt="Hello. ECHO: a b c", stream=True))
    assert text == "a b c" and generation_calls(stack, "/api/generate")[-1]["model"] == VIBE


def test_native_requests_reject_what_they_cannot_do(stack):
    r = stack.request("POST", "/api/chat", {"model": "auto", "messages": [{"role": "user", "content": "hi"}],
                                            "router": {"mode": "async"}})
    assert r.status == 400
    assert stack.request("POST", "/api/chat", {"model": "auto", "messages": "hi"}).status == 400
    assert stack.request("POST", "/api/generate", {"model": "auto", "prompt": 3}).status == 400
    assert stack.request("POST", "/api/chat", {"model": "auto", "messages": [], "stream": "yes"}).status == 400


# ---- embeddings and completions -------------------------------------------------------------------------

def test_embeddings_go_to_the_first_embedding_model(stack_factory):
    stack = stack_factory(with_embedder())
    native = ollama.Client(host=stack.url).embed(model="auto", input=["alpha", "beta"])
    assert len(native.embeddings) == 2 and generation_calls(stack, "/api/embed")[-1]["model"] == EMBED
    sdk = stack.openai().embeddings.create(model="text-embedding-3-small", input="alpha")
    assert len(sdk.data[0].embedding) == len(native.embeddings[0])
    call = generation_calls(stack, "/v1/embeddings")[-1]
    assert call["model"] == EMBED and "stream" not in call["body"] and "router" not in call["body"]
    raw = stack.request("POST", "/v1/embeddings", {"model": "auto", "input": "x"}).json()["router"]
    assert raw["selectedModel"] == EMBED and raw["decisionReason"] == "First configured embedding model"
    pinned = stack.request("POST", "/api/embed", {"model": EMBED, "input": "x"}).json()["router"]
    assert pinned["pinned"] is True


def test_embeddings_without_an_embedding_model_are_404(stack):
    r = stack.request("POST", "/v1/embeddings", {"model": "auto", "input": "x"})
    assert r.status == 404 and "embedding" in r.json()["error"]["message"]
    assert_no_null(r.json())


def test_text_completions_go_to_the_first_completion_model(stack_factory):
    stack = stack_factory(with_embedder())
    client = stack.openai()
    reply = client.completions.create(model="auto", prompt="ECHO: blue sky")
    assert reply.choices[0].text == "blue sky" and reply.model_extra["router"]["selectedModel"] == VIBE
    pinned = client.completions.create(model=GPTOSS, prompt="ECHO: x")
    assert pinned.model_extra["router"]["selectedModel"] == GPTOSS
    chunks = list(client.completions.create(model="auto", prompt="ECHO: one two", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "one two"
    assert generation_calls(stack, "/v1/completions")[-1]["body"]["stream"] is True


def test_ollama_down_listings_are_json_errors(stack):
    async def down() -> None:
        await stack.sim.set_down(True)

    stack.call(down())
    wait_for(lambda: not stack.app.snapshot.ollama_reachable)
    for path in ("/api/ps", "/api/version"):
        r = stack.request("GET", path)
        assert r.status == 503 and r.json()["code"] == "ollama_unreachable", path
        assert r.json()["error"].startswith("Ollama is unreachable"), path  # Ollama's own shape under /api
    assert stack.request("GET", "/v1/models").status == 200  # configured models need no Ollama
    r = stack.request("POST", "/api/chat", chat_body("hi"))
    assert r.status == 503


# ---- the rest of the Ollama-native surface --------------------------------------------------------------

def test_show_passes_through_and_auto_shows_the_model_routed_to_now(stack):
    client = ollama.Client(host=stack.url)
    auto = client.show("auto")
    direct = client.show(QWEN)
    assert auto.details.family and direct.modelinfo is not None
    shown = [c["model"] for c in generation_calls(stack, "/api/show")]
    assert shown == [VIBE, QWEN]  # an empty conversation goes where the unknown task type goes
    r = stack.request("POST", "/api/show", {"name": "auto"})
    assert r.status == 200 and r.headers["x-router-selected-model"] == VIBE
    with pytest.raises(ollama.ResponseError) as e:
        client.show("no-such-model")
    assert e.value.status_code == 404 and "not found" in e.value.error


def test_legacy_embeddings_go_to_the_embedding_model(stack_factory):
    stack = stack_factory(with_embedder())
    reply = ollama.Client(host=stack.url).embeddings(model="auto", prompt="alpha")
    assert len(reply.embedding) > 0 and generation_calls(stack, "/api/embeddings")[-1]["model"] == EMBED


def test_model_management_is_refused_in_ollamas_shape(stack):
    client = ollama.Client(host=stack.url)
    for call in (lambda: client.pull("llama3"), lambda: client.delete(QWEN), lambda: client.copy(QWEN, "x"),
                 lambda: client.push("me/x"), lambda: client.create("x", from_=QWEN)):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 403 and "not available through the router" in e.value.error
    assert not [c for c in stack.sim.calls if c["path"] not in ("/api/ps", "/api/version", "/api/tags")]


def test_every_error_under_api_is_in_ollamas_shape(stack):
    for method, path, body in (("GET", "/api/nope", None), ("GET", "/api/chat", None),
                               ("POST", "/api/chat", {"model": "auto", "messages": "hi"}),
                               ("POST", "/api/generate", b"{not json")):
        r = stack.request(method, path, raw=body) if isinstance(body, bytes) else stack.request(method, path, body)
        assert r.status in (400, 404, 405) and isinstance(r.json()["error"], str) and r.json()["code"], (path, r)
    stack.sim.inject(QWEN, Fault(status=400, message=f"{QWEN} does not support tools"))
    with pytest.raises(ollama.ResponseError) as e:  # Ollama's own error, relayed as the library reads it
        ollama.Client(host=stack.url).chat(model=QWEN, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 400 and e.value.error == f"{QWEN} does not support tools"
