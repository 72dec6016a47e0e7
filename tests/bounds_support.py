"""Test parts for the bounds under hostile load: a scripted raw upstream, a router in front of it, and a
watch on the event loop's longest stall."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from typing import Any

from conftest import LoopThread, Reply, _ListStream, make_config, merge

# What Ollama's probes get: enough for the router to call it reachable.
PROBES = {
    "/api/ps": b'{"models":[]}',
    "/api/version": b'{"version":"0.0.0"}',
    "/api/tags": b'{"models":[]}',
}
COMPLETION = json.dumps({"id": "c1", "object": "chat.completion", "model": "m", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}).encode()


def reply(body: bytes, status: str = "200 OK", headers: str = "Content-Type: application/json\r\n") -> bytes:
    return f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


class RawUpstream:
    """An HTTP/1.1 server whose answers are raw bytes: ``script[path]`` for a path, the probes otherwise.

    An answer of None holds the connection open without a byte; bytes that end without a length are followed
    by ``trickle`` (if set), written every 10 ms until the client goes away. Every request head is kept."""

    def __init__(self, script: dict[str, bytes | None] | None = None, trickle: bytes = b"") -> None:
        self.script = dict(script or {})
        self.trickle = trickle
        self.heads: list[str] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._open: set[asyncio.Task] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and drop every connection (the router's pooled ones too)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in self._open:
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                self.heads.append(head)
                length = next((int(line.split(":", 1)[1]) for line in head.split("\r\n")
                               if line.lower().startswith("content-length:")), 0)
                await reader.readexactly(length)
                path = head.split(" ", 2)[1]
                answer = self.script.get(path, reply(PROBES.get(path, b"{}")))
                if answer is None:
                    await reader.read()  # hold until the router gives up
                    return
                writer.write(answer)
                while self.trickle:
                    writer.write(self.trickle)
                    await writer.drain()
                    await asyncio.sleep(0.01)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._open.discard(task)
            writer.close()


class RawStack(LoopThread):
    """A router (``App``) in front of a ``RawUpstream``, on a background loop like ``conftest.Stack``."""

    def __init__(self, upstream: RawUpstream, override: dict | None = None, *, credentials: str = "") -> None:
        super().__init__()
        self.upstream = upstream
        self.override = override or {}
        self.credentials = credentials  # "user:pass@" put into ollama.baseUrl

    def start(self) -> "RawStack":
        from ollama_agent_router.app import App
        from ollama_agent_router.log import Logger

        self.thread.start()
        port = self.call(self.upstream.start())
        self.cfg = make_config(merge(self.override, {"ollama": {"baseUrl": f"http://{self.credentials}127.0.0.1:{port}"}}))
        self.log_lines: list[str] = []

        async def boot() -> int:
            self.app = App(self.cfg, log=Logger("debug", _ListStream(self.log_lines)))
            return await self.app.start("127.0.0.1", 0)

        self.port = self.call(boot())
        return self

    def stop(self) -> None:
        try:
            self.call(self.app.stop(1.0))
            self.call(self.upstream.stop())
        finally:
            self.end_loop()

    def request(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        out = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        conn.close()
        return out


class LoopWatch:
    """The longest time the loop took to come back to a 1 ms ticker: how long some callback held it."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        await asyncio.sleep(0)

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        return self.worst

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - before - 0.001)
