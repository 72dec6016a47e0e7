"""Real client libraries under load, through the router against the simulator over loopback HTTP.

A plain client (no ``router`` object, no ``Prefer: respond-async``) must never get a 202: the openai SDK
parses one as a completion with ``choices=None`` and raises nothing, LangChain raises a TypeError and
LiteLLM an InternalServerError. It waits in its model's queue instead, as it would at Ollama. A client
that opts in still gets its job.
"""

from __future__ import annotations

import asyncio

import pytest
from conftest import wait_for

# Every model runs one request at a time, two at once in all, and any waiting request counts as heavy load:
# the TypeScript router's defaults would turn most of these calls into 202 jobs.
BUSY = {
    "router": {"heavyLoadQueueDepth": 1, "syncMaxQueueTimeMs": 50},
    "queue": {"globalMaxConcurrent": 2, "globalMaxQueued": 200, "perUserMaxQueued": 200},
}
SIM = {"sim_kw": {"tokens_per_second": 400, "reply_tokens": 6}}
PROMPTS = ["Hello there", "Write a Python function that merges two sorted lists", "Summarize: the cat sat.",
           "Fix this bug: TypeError in foo()"]


def prompt(i: int) -> str:
    return f"{PROMPTS[i % len(PROMPTS)]} ({i})"


async def gather(coros):
    return await asyncio.wait_for(asyncio.gather(*coros), 120)


def test_forty_concurrent_plain_openai_calls_all_get_completions(stack_factory):
    stack = stack_factory(BUSY, **SIM)
    client = stack.async_openai()

    async def main():
        calls = [client.chat.completions.create(model="auto", messages=[{"role": "user", "content": prompt(i)}])
                 for i in range(40)]
        return await gather(calls)

    replies = asyncio.run(main())
    assert all(r.choices and r.choices[0].message.content for r in replies)
    assert stack.run(lambda: len(stack.app.jobs.jobs)) == 0  # no job was made
    assert max(r.model_extra["router"]["queueTimeMs"] for r in replies) > 0  # they really queued


def test_langchain_abatch_answers_every_prompt(stack_factory):
    from langchain_openai import ChatOpenAI

    stack = stack_factory(BUSY, **SIM)
    llm = ChatOpenAI(base_url=f"{stack.url}/v1", api_key="sk-none", model="auto", max_retries=0)
    replies = asyncio.run(asyncio.wait_for(llm.abatch([prompt(i) for i in range(20)]), 120))
    assert len(replies) == 20 and all(isinstance(r.content, str) and r.content for r in replies)


def test_litellm_acompletion_answers_every_call(stack_factory, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of the price list at import
    import litellm

    stack = stack_factory(BUSY, **SIM)

    async def main():
        calls = [litellm.acompletion(model="openai/auto", api_base=f"{stack.url}/v1", api_key="sk-none",
                                     messages=[{"role": "user", "content": prompt(i)}], num_retries=0)
                 for i in range(20)]
        return await gather(calls)

    replies = asyncio.run(main())
    assert all(r.choices[0].message.content for r in replies)


@pytest.mark.parametrize("opt_in", ["router.allowAsync", "Prefer: respond-async"])
def test_a_client_that_opts_in_gets_its_job(stack_factory, opt_in):
    stack = stack_factory({"router": {"heavyLoadQueueDepth": 0}}, **SIM)  # 0: always heavy, as in the original
    client = stack.async_openai()
    kw = ({"extra_body": {"router": {"allowAsync": True}}} if opt_in == "router.allowAsync"
          else {"extra_headers": {"Prefer": "respond-async"}})

    async def main():
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "Hello there"}], **kw)
        plain = await client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "Hi"}])
        return raw, plain

    raw, plain = asyncio.run(main())
    assert raw.status_code == 202
    body = raw.http_response.json()
    assert body["status"] == "queued" and body["object"] == "router.job"
    assert (raw.headers.get("preference-applied") == "respond-async") == (opt_in == "Prefer: respond-async")
    assert plain.choices[0].message.content  # the same config, no opt-in: an answer, not a job
    wait_for(lambda: stack.request("GET", f"/v1/jobs/{body['id']}").json()["status"] == "succeeded", timeout=10)
    result = stack.request("GET", f"/v1/jobs/{body['id']}/result")
    assert result.status == 200 and result.json()["choices"][0]["message"]["content"]


def test_a_queue_cap_gives_plain_clients_429_with_retry_after(stack_factory):
    stack = stack_factory({"queue": {"globalMaxConcurrent": 1, "globalMaxQueued": 1, "perUserMaxQueued": 1}}, **SIM)
    client = stack.async_openai()

    async def main():
        calls = [client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": prompt(i)}]) for i in range(6)]
        return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)

    import openai

    outcomes = asyncio.run(main())
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert refused and all(e.response.headers["retry-after"] for e in refused)
    assert all(o.status_code == 200 for o in outcomes if not isinstance(o, Exception))
