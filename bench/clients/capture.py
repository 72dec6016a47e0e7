"""A recording proxy for bench/clients/agents.sh: every request a client sends is written to a directory as
JSON (method, path, headers, body), then passed on to the router unchanged and its reply piped back.

It sits in front of the router, not inside it, so what it writes is exactly what Claude Code or Codex CLI
sent: the harness's system prompt, tools, reminder blocks and session headers included. Credentials
(``Authorization``, ``x-api-key``, cookies) are never written.

    python bench/clients/capture.py --port 0 --target http://127.0.0.1:11435 --out DIR   # prints its port

Stdlib only, one asyncio loop; bench tooling, not part of the package.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
from pathlib import Path
from urllib.parse import urlsplit

SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})
MAX_BODY = 64 << 20


class Recorder:
    def __init__(self, target: str, out: Path) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.out = out
        self.seq = itertools.count(1)

    def record(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> None:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        entry = {"method": method, "path": target,
                 "headers": {k.lower(): v for k, v in headers if k.lower() not in SECRET_HEADERS},
                 "body": parsed}
        path = self.out / f"{next(self.seq):04d}.json"
        path.write_text(json.dumps(entry, ensure_ascii=False, indent=1), encoding="utf-8")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if ":" in line]
        names = {k.lower(): v for k, v in headers}
        if "chunked" in names.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(min(int(names.get("content-length", "0")), MAX_BODY))
        self.record(method, target, headers, body)
        # One exchange per upstream connection, so the reply ends where the router closes it.
        sent = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers
                                                  if k.lower() not in ("connection", "transfer-encoding",
                                                                       "content-length", "keep-alive")]
        sent += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        try:
            up_writer.write("\r\n".join(sent).encode("latin-1") + body)
            await up_writer.drain()
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.close()
        return False  # the reply said Connection: close; the client opens a new connection


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > MAX_BODY:
            raise ConnectionError("body too large")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--target", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = await asyncio.start_server(Recorder(args.target, args.out).handle, "127.0.0.1", args.port)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
