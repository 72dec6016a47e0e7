"""Shared fixtures: the original's test config, and a live stack (simulator + router) on loopback.

The stack runs in its own event loop on a background thread so tests can use the official sync and
async clients exactly as users do; ``stack.call(coro)`` runs a coroutine on the stack's loop for
inspection or fault injection.
"""

from __future__ import annotations

import asyncio
import copy
import http.client
import json
import threading
import time
from typing import Any, Callable

import pytest

from ollama_agent_router.config.parse import parse_config
from ollama_agent_router.config.schema import Config

TEST_CONFIG: dict[str, Any] = {
    "server": {"nodeId": "test-node", "host": "127.0.0.1", "port": 11435, "requestBodyLimit": "2mb"},
    "ollama": {"baseUrl": "http://127.0.0.1:11434", "requestTimeoutMs": 10000, "pollIntervalMs": 100},
    "gpu": {
        "provider": "nvidia", "name": "Test GPU", "vramTotalMb": 20480, "vramSafetyReserveMb": 512,
        "maxGpuUtilizationPct": 95, "monitor": {"enabled": False, "intervalMs": 1000},
    },
    "router": {
        "defaultMode": "auto", "syncMaxQueueTimeMs": 5000, "heavyLoadQueueDepth": 5,
        "heavyLoadGpuFreeMbThreshold": 1024, "defaultTaskType": "unknown",
        "classification": {"mode": "heuristic", "classifierTimeoutMs": 1000},
    },
    "jobs": {"resultTtlSeconds": 3600, "maxAttempts": 1, "cleanupIntervalMs": 1000},
    "models": [
        {"name": "B-A-M-N/vibethinker:1.5b", "sizeGb": 3.6, "purpose": ["triage", "simple_chat", "summarize"],
         "priority": 50, "maxConcurrent": 2, "defaultContext": 4096, "maxContext": 8192, "timeoutMs": 10000,
         "costClass": "low", "allowWhenBusy": True},
        {"name": "qwen2.5-coder:7b", "sizeGb": 4.7, "purpose": ["code_generate", "code_fix", "tool_use", "agentic_reasoning"],
         "priority": 70, "maxConcurrent": 1, "defaultContext": 8192, "maxContext": 32768, "timeoutMs": 10000,
         "costClass": "medium", "allowWhenBusy": True},
        {"name": "deepseek-coder:6.7b", "sizeGb": 3.8, "purpose": ["code_review", "code_generate", "code_fix"],
         "priority": 68, "maxConcurrent": 1, "defaultContext": 8192, "maxContext": 16384, "timeoutMs": 10000,
         "costClass": "medium", "allowWhenBusy": True},
        {"name": "gpt-oss:20b", "sizeGb": 14, "purpose": ["agentic_reasoning", "large_context", "tool_use"],
         "priority": 95, "maxConcurrent": 1, "defaultContext": 16384, "maxContext": 65536, "timeoutMs": 10000,
         "costClass": "high", "exclusive": True, "allowWhenBusy": False},
    ],
    "routes": {
        "triage": ["B-A-M-N/vibethinker:1.5b"],
        "simple_chat": ["B-A-M-N/vibethinker:1.5b", "qwen2.5-coder:7b"],
        "summarize": ["B-A-M-N/vibethinker:1.5b"],
        "code_generate": ["qwen2.5-coder:7b", "deepseek-coder:6.7b"],
        "code_review": ["deepseek-coder:6.7b", "qwen2.5-coder:7b"],
        "code_fix": ["qwen2.5-coder:7b", "deepseek-coder:6.7b"],
        "agentic_reasoning": ["gpt-oss:20b", "qwen2.5-coder:7b"],
        "large_context": ["gpt-oss:20b", "qwen2.5-coder:7b"],
        "tool_use": ["qwen2.5-coder:7b", "gpt-oss:20b"],
        "unknown": ["B-A-M-N/vibethinker:1.5b"],
    },
    "queue": {"globalMaxConcurrent": 4, "globalMaxQueued": 50, "perUserMaxQueued": 10, "defaultPriority": "normal",
              "timeoutMs": 10000},
}

VIBE, QWEN, DEEPSEEK, GPTOSS = (m["name"] for m in TEST_CONFIG["models"])


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_config(override: dict | None = None, **kw: Any) -> Config:
    return parse_config(merge(TEST_CONFIG, override or {}), **kw)


def config_with(**sections: Any) -> Config:
    """The test config with whole top-level sections replaced (not merged)."""
    raw = copy.deepcopy(TEST_CONFIG)
    raw.update(copy.deepcopy(sections))
    return parse_config(raw)


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll a condition until it holds (never a fixed sleep); fail loudly on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class LoopThread:
    """An event loop on a daemon thread, steered from the test's thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run a plain function on the loop (to read or change state without races)."""

        async def wrapper() -> Any:
            return fn()

        return self.call(wrapper())

    def end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Stack(LoopThread):
    """A simulator and a router on loopback, in a background event loop."""

    def __init__(self, cfg_override: dict | None = None, *, sim_kw: dict | None = None,
                 app_kw: dict | None = None, simulated_gpu: bool = True) -> None:
        super().__init__()
        self.cfg_override = cfg_override or {}
        self.sim_kw = sim_kw or {}
        self.app_kw = app_kw or {}
        self.simulated_gpu = simulated_gpu

    def start(self) -> "Stack":
        from ollama_agent_router.app import App
        from ollama_agent_router.log import Logger
        from ollama_agent_router.simulator.server import OllamaSimulator

        self.thread.start()
        cfg = make_config(self.cfg_override)
        self.sim = OllamaSimulator.from_config(cfg, **self.sim_kw)
        self.call(self.sim.start())
        override = merge(self.cfg_override, {"ollama": {"baseUrl": self.sim.url}})
        if self.simulated_gpu:
            override = merge(override, {"gpu": {"monitor": {"enabled": True}}})
        self.cfg = make_config(override)
        backend = self.sim.gpu_backend() if self.simulated_gpu else None
        self.log_lines: list[str] = []
        stream = _ListStream(self.log_lines)

        async def boot() -> int:
            self.app = App(self.cfg, log=Logger("debug", stream), gpu_backend=backend, **self.app_kw)
            return await self.app.start("127.0.0.1", 0)

        self.port = self.call(boot())
        base = self.cfg.server.base_path.rstrip("/")
        self.url = f"http://127.0.0.1:{self.port}{base}"
        return self

    def stop(self) -> None:
        try:
            self.call(self.app.stop(2.0))
            self.call(self.sim.stop())
        finally:
            self.end_loop()

    def chat_calls(self, model: str | None = None, path: str = "/v1/chat/completions") -> list[dict]:
        """What reached the simulator's chat route (the runtime's /api/ps polls left out)."""
        return [c for c in self.sim.calls if c["path"] == path and (model is None or c["model"] == model)]

    # ---- clients ------------------------------------------------------------------------------
    def openai(self, **kw: Any):
        import openai

        kw.setdefault("api_key", "sk-none")
        kw.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=f"{self.url}/v1", **kw)

    def async_openai(self, **kw: Any):
        import openai

        kw.setdefault("api_key", "sk-none")
        kw.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", **kw)

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None,
                raw: bytes | None = None, prefix: bool = True) -> "Reply":
        """One request on a fresh connection; ``path`` is relative to the base path unless ``prefix=False``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"content-type": "application/json"} if data is not None else {}
        hdrs.update(headers or {})
        full = self.cfg.server.base_path.rstrip("/") + path if prefix else path
        conn.request(method, full, body=data, headers=hdrs)
        resp = conn.getresponse()
        reply = Reply(resp.status, dict((k.lower(), v) for k, v in resp.getheaders()), resp.read())
        conn.close()
        return reply


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


class _ListStream:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def write(self, s: str) -> None:
        self.lines.append(s)

    def flush(self) -> None:
        pass


@pytest.fixture
def stack_factory():
    stacks: list[Stack] = []

    def factory(cfg_override: dict | None = None, **kw: Any) -> Stack:
        s = Stack(cfg_override, **kw).start()
        stacks.append(s)
        return s

    yield factory
    for s in stacks:
        s.stop()


@pytest.fixture
def stack(stack_factory) -> Stack:
    return stack_factory()


def chat_body(content: str, **router: Any) -> dict:
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": content}]}
    if router:
        body["router"] = router
    return body


def assert_no_null(value: Any, path: str = "$") -> None:
    """Fail on any JSON null inside ``value`` (Kong's lua-cjson turns null into a truthy value and crashes)."""
    assert value is not None, f"JSON null at {path}"
    if isinstance(value, dict):
        for k, v in value.items():
            assert_no_null(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            assert_no_null(v, f"{path}[{i}]")
