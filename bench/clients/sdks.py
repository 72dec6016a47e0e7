"""The client matrix of docs/clients.md: each library a user would point at the router, with the calls it
makes, run against ``ollama-agent-router serve --simulate`` and judged from the router's own access log.

Not part of CI: LangChain and LiteLLM are not test dependencies. A library that is not installed is listed
as such. Run: python bench/clients/sdks.py (prints a markdown table; exits 1 if any installed client failed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchkit import free_port, wait_port  # noqa: E402

CODE = "Write a Python function that reverses a string"
WEATHER_OPENAI = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_ANTHROPIC = {"name": "get_weather", "description": "Weather for a city",
                     "input_schema": WEATHER_OPENAI["parameters"]}


class Router:
    """``serve --simulate`` on a free port, in a scratch directory (the bundled profile), logging to a file."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="oar-clients-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(self.dir, "router.log")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ollama_agent_router", "serve", "--simulate", "--host", "127.0.0.1", "--port",
                 str(self.port), "--log-level", "info"], cwd=self.dir, env={**os.environ, "HOME": self.dir},
                stdout=log, stderr=subprocess.STDOUT)
        wait_port(self.port)

    def lines(self) -> int:
        return len(self.log_path.read_text().splitlines())

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until the log holds the lines of every request answered so far: a /health request sent now
        is logged after them, so its line is the sign."""
        before = self.log_path.read_text().count('"path":"/health"')
        urllib.request.urlopen(f"{self.url}/health", timeout=timeout).read()
        deadline = time.monotonic() + timeout
        while self.log_path.read_text().count('"path":"/health"') == before:
            if time.monotonic() > deadline:
                raise RuntimeError("the router did not log a /health request")
            time.sleep(0.01)

    def requests_since(self, start: int) -> list[str]:
        out = []
        for line in self.log_path.read_text().splitlines()[start:]:
            try:
                d = json.loads(line)
            except ValueError:
                continue
            if d.get("event") == "request" and d.get("path") not in ("/api/ps", "/health"):
                task = f" ({d['taskType']})" if "taskType" in d else ""
                routed = f" → {d['model']}{task}" if "model" in d else ""
                out.append(f"{d['method']} {d['path']} {d['status']}{routed}")
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def openai_calls(url: str) -> list[tuple[str, Callable[[], Any]]]:
    import openai

    c = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)

    def function_round_trip() -> str:
        first = c.responses.create(model="auto", input="Weather in Paris?", tools=[WEATHER_OPENAI])
        call = first.output[0]
        history = [{"role": "user", "content": "Weather in Paris?"},
                   {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
                   {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
        return c.responses.create(model="auto", input=history, tools=[WEATHER_OPENAI]).output_text

    def responses_stream() -> str:
        with c.responses.stream(model="auto", input=CODE) as stream:
            return stream.get_final_response().output_text

    return [
        ("chat.completions.create", lambda: c.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": CODE}]).choices[0].message.content),
        ("chat.completions.create(stream=True)", lambda: "".join(
            ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], stream=True) if ch.choices)),
        ("models.list", lambda: ", ".join(m.id for m in c.models.list().data)),
        ("responses.create", lambda: c.responses.create(model="gpt-5-codex", input=CODE).output_text),
        ("responses.stream", responses_stream),
        ("responses function call → function_call_output", function_round_trip),
    ]


def anthropic_calls(url: str) -> list[tuple[str, Callable[[], Any]]]:
    import anthropic

    c = anthropic.Anthropic(base_url=url, api_key="none", max_retries=0)
    hello = [{"role": "user", "content": CODE}]

    def stream() -> str:
        with c.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=hello) as s:
            return "".join(s.text_stream)

    def tool_round_trip() -> str:
        ask = [{"role": "user", "content": "Weather in Paris?"}]
        first = c.messages.create(model="claude-sonnet-4-5", max_tokens=256, tools=[WEATHER_ANTHROPIC], messages=ask)
        use = first.content[-1]
        history = [*ask, {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
        return c.messages.create(model="claude-sonnet-4-5", max_tokens=256, tools=[WEATHER_ANTHROPIC],
                                 messages=history).content[0].text

    return [
        ("messages.create", lambda: c.messages.create(model="claude-sonnet-4-5", max_tokens=256,
                                                      messages=hello).content[0].text),
        ("messages.stream (text_stream)", stream),
        ("messages tool_use → tool_result", tool_round_trip),
        ("messages.count_tokens", lambda: c.messages.count_tokens(model="claude-sonnet-4-5",
                                                                  messages=hello).input_tokens),
    ]


def ollama_calls(url: str) -> list[tuple[str, Callable[[], Any]]]:
    import ollama

    c = ollama.Client(host=url)
    return [
        ("list", lambda: ", ".join(m.model for m in c.list().models)),
        ("chat", lambda: c.chat(model="auto", messages=[{"role": "user", "content": CODE}]).message.content),
        ("generate(stream=True)", lambda: "".join(p.response for p in c.generate(model="auto", prompt="hi",
                                                                                stream=True))),
        ("embed", lambda: f"{len(c.embed(model='auto', input='alpha').embeddings[0])} dimensions"),
        ("embeddings (legacy)", lambda: f"{len(c.embeddings(model='auto', prompt='alpha').embedding)} dimensions"),
        ("show('auto')", lambda: c.show("auto").details.family),
        ("pull (refused)", lambda: c.pull("llama3")),
    ]


def langchain_calls(url: str) -> list[tuple[str, Callable[[], Any]]]:
    from langchain_ollama import ChatOllama, OllamaEmbeddings
    from langchain_openai import ChatOpenAI

    return [
        ("ChatOpenAI.invoke", lambda: ChatOpenAI(base_url=f"{url}/v1", api_key="none", model="auto",
                                                 max_retries=0).invoke(CODE).content),
        ("ChatOpenAI(use_responses_api=True).invoke", lambda: ChatOpenAI(
            base_url=f"{url}/v1", api_key="none", model="auto", max_retries=0, use_responses_api=True).invoke(CODE).text),
        ("ChatOllama.invoke", lambda: ChatOllama(base_url=url, model="auto").invoke(CODE).content),
        ("OllamaEmbeddings.embed_query", lambda: f"{len(OllamaEmbeddings(base_url=url, model='auto').embed_query('a'))}"
                                                 " dimensions"),
    ]


def litellm_calls(url: str) -> list[tuple[str, Callable[[], Any]]]:
    import litellm

    hello = [{"role": "user", "content": CODE}]
    return [
        ("completion(openai/auto)", lambda: litellm.completion(model="openai/auto", api_base=f"{url}/v1",
                                                               api_key="none", messages=hello).choices[0].message.content),
        ("completion(ollama_chat/auto)", lambda: litellm.completion(model="ollama_chat/auto", api_base=url,
                                                                    messages=hello).choices[0].message.content),
        ("completion(anthropic/claude-sonnet-4-5)", lambda: litellm.completion(
            model="anthropic/claude-sonnet-4-5", api_base=url, api_key="none", max_tokens=256,
            messages=hello).choices[0].message.content),
    ]


# (name, its distributions, its calls)
CLIENTS = [("openai", ("openai",), openai_calls), ("anthropic", ("anthropic",), anthropic_calls),
           ("ollama", ("ollama",), ollama_calls), ("LangChain", ("langchain-openai", "langchain-ollama"), langchain_calls),
           ("LiteLLM", ("litellm",), litellm_calls)]


def versions_of(dists: tuple[str, ...]) -> str:
    from importlib.metadata import version

    return ", ".join(f"{d} {version(d)}" for d in dists) if len(dists) > 1 else version(dists[0])


def main() -> int:
    router = Router()
    rows, failed = [], 0
    try:
        for name, dists, calls in CLIENTS:
            try:
                steps = calls(router.url)
            except ImportError as e:
                rows.append((name, "-", f"not installed ({e.name})", ""))
                continue
            versions = versions_of(dists)
            for call, fn in steps:
                start = router.lines()
                try:
                    result = f"ok: {str(fn())[:60]!r}"
                except Exception as e:  # a client's failure is a row of the table, not the end of the run
                    result = f"{type(e).__name__}: {str(e)[:120]}"
                    failed += "refused" not in call
                router.settle()
                rows.append((f"{name} {versions}", call, result, "; ".join(router.requests_since(start))))
    finally:
        router.stop()
    print("| client | call | result | what the router logged |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
