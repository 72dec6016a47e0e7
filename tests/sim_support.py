"""The simulator under test and a raw HTTP/1.1 client for exact bytes, shared by the simulator's tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import openai

from ollama_agent_router.simulator.run import Fault, SimModel
from ollama_agent_router.simulator.server import OllamaSimulator

THINKER = "qwq:32b"
CODER = "qwen2.5-coder:7b"
EMBED = "nomic-embed-text"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "verbose": {"type": "boolean"},
            },
            "required": ["city", "days", "unit"],
        },
    },
}


def models() -> list[SimModel]:
    return [
        SimModel(CODER, 4.7, family="qwen2", parameter_size="7.6B"),
        SimModel("llama3.2", 2.0, parameter_size="3.2B"),
        SimModel(EMBED, 0.27, family="nomic-bert", capabilities=("embedding",)),
        SimModel(THINKER, 19.0, family="qwen2", capabilities=("completion", "tools", "thinking")),
    ]


@asynccontextmanager
async def running(model_list: list[SimModel] | None = None, **kw: Any) -> AsyncIterator[OllamaSimulator]:
    sim = OllamaSimulator(models() if model_list is None else model_list, **kw)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


def oai(sim: OllamaSimulator) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="ollama", max_retries=0)


async def until(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# ---- a raw HTTP/1.1 client, for exact bytes and for hanging up mid-stream ---------------------------------------

class Raw:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, complete: bool) -> None:
        self.status, self.headers, self.body, self.complete = status, headers, body, complete

    def json(self) -> Any:
        return json.loads(self.body)

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]

    def events(self) -> list[str]:
        return [e[len("data: "):] for e in self.body.decode().split("\n\n") if e]

    def named_events(self) -> list[tuple[str, dict[str, Any]]]:
        """``event:`` + ``data:`` pairs; anything else in an event fails the test."""
        out = []
        for block in self.body.decode().split("\n\n"):
            if block:
                name, data = block.split("\n")
                assert name.startswith("event: ") and data.startswith("data: "), block
                out.append((name[len("event: "):], json.loads(data[len("data: "):])))
        return out


async def send(sim: OllamaSimulator, method: str, path: str, body: Any = None) -> tuple[Any, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(data)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + data)
    return reader, writer


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in head[1:] if line)}
    return int(head[0].split()[1]), headers


async def read_chunk(reader: asyncio.StreamReader) -> bytes | None:
    """One chunk of a chunked body; None at the terminating chunk."""
    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
    data = await reader.readexactly(size + 2)
    return data[:-2] if size else None


async def request(sim: OllamaSimulator, method: str, path: str, body: Any = None) -> Raw:
    reader, writer = await send(sim, method, path, body)
    try:
        status, headers = await read_head(reader)
        if headers.get("transfer-encoding") != "chunked":
            data = await reader.readexactly(int(headers.get("content-length", "0"))) if method != "HEAD" else b""
            return Raw(status, headers, data, True)
        parts: list[bytes] = []
        try:
            while (chunk := await read_chunk(reader)) is not None:
                parts.append(chunk)
        except (asyncio.IncompleteReadError, ConnectionError):
            return Raw(status, headers, b"".join(parts), False)
        return Raw(status, headers, b"".join(parts), True)
    finally:
        writer.close()


def run(coro: Any) -> None:
    asyncio.run(coro)


async def broken_streams(sim: OllamaSimulator, path: str, body: dict[str, Any]) -> list[list[str]]:
    """The event names of a named-event stream broken after it began, once by each kind of fault (an error
    line, an end without the final chunk); each must still be a 200 whose body ended cleanly."""
    out = []
    for fault in (Fault(mid_stream_error="boom"), Fault(no_done=True)):
        sim.inject(CODER, fault)
        r = await request(sim, "POST", path, body)
        assert r.status == 200 and r.complete
        out.append([name for name, _ in r.named_events()])
    return out
