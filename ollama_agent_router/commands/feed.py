"""The live feed for client commands: ``GET /v1/router/events`` read from a socket as events arrive.

A socket rather than ``http.client``: ``oar top`` waits for events and for key presses at once, so a read
must be able to time out without losing what was half read. Here the chunked framing and the SSE lines are
taken apart on bytes this object holds, so a read that times out loses nothing.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from .. import __version__
from .client import ClientError, Target, _reason, _tls_context

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PATH = "/v1/router/events"
MAX_HELD = 16 * 1024 * 1024  # bytes of one unfinished event we are willing to hold


class Feed:
    def __init__(self, target: Target, path: str = PATH) -> None:
        url = target.endpoint(path)
        parts = urlsplit(url)
        https = parts.scheme == "https"
        try:
            host, port = parts.hostname or "", parts.port or (443 if https else 80)
            sock = socket.create_connection((host, port), timeout=target.timeout)
            if https:
                sock = _tls_context(target.ca_cert, target.insecure).wrap_socket(sock, server_hostname=host)
        except (OSError, ValueError) as e:
            raise ClientError(f"fetch failed: GET {url}: {_reason(e)}") from None
        self.sock = sock
        self.url = url
        self.raw = b""  # received, not yet unframed
        self.text = b""  # unframed, not yet a whole event
        self.chunked = True
        self.ended = False
        auth = f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else ""
        target_path = parts.path + (f"?{parts.query}" if parts.query else "")
        self._send(f"GET {target_path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n"
                   f"User-Agent: ollama-agent-router/{__version__}\r\n{auth}\r\n".encode("latin-1"))
        self._read_head(target.timeout)

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ClientError(f"fetch failed: GET {self.url}: {_reason(e)}") from None

    def _recv(self, timeout: float) -> bytes | None:
        """Bytes that came within ``timeout`` (None when none did)."""
        self.sock.settimeout(max(0.001, timeout))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        except OSError as e:
            raise ClientError(f"the feed broke off: {_reason(e)}") from None
        if not data:
            self.ended = True
            raise ClientError("the router closed the feed")
        return data

    def _read_head(self, timeout: float) -> None:
        while b"\r\n\r\n" not in self.raw:
            data = self._recv(timeout)
            if data is None:
                raise ClientError(f"fetch failed: GET {self.url}: timed out")
            self.raw += data
            if len(self.raw) > 64 * 1024:
                raise ClientError("the router sent an oversized response head")
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if status != 200:
            raise ClientError(self._error(status, int(headers.get("content-length", "0") or 0), timeout))

    def _error(self, status: int, length: int, timeout: float) -> str:
        while len(self.raw) < length:
            data = self._recv(timeout)
            if data is None:
                break
            self.raw += data
        try:
            message = json.loads(self.raw[:length])["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = self.raw[:length].decode("utf-8", "replace").strip()
        return f"HTTP {status} from {self.url}: {message or 'no message'}"

    def events(self, timeout: float) -> list[tuple[str, Any]]:
        """The whole events that arrived within ``timeout`` seconds (none is an empty list)."""
        if self.ended:
            raise ClientError("the router closed the feed")
        data = self._recv(timeout)
        if data is None:
            return []
        self.raw += data
        self._unframe()
        if len(self.raw) + len(self.text) > MAX_HELD:
            raise ClientError("the feed sent an event larger than this client holds")
        return self._parse()

    def _unframe(self) -> None:
        if not self.chunked:
            self.text += self.raw
            self.raw = b""
            return
        while True:
            eol = self.raw.find(b"\r\n")
            if eol < 0:
                return
            try:
                size = int(self.raw[:eol].split(b";")[0], 16)
            except ValueError:
                raise ClientError("the feed's chunked framing is broken") from None
            if size == 0:
                self.ended = True
                return
            end = eol + 2 + size
            if len(self.raw) < end + 2:
                return
            self.text += self.raw[eol + 2 : end]
            self.raw = self.raw[end + 2 :]

    def _parse(self) -> list[tuple[str, Any]]:
        out = []
        while True:
            end = self.text.find(b"\n\n")
            if end < 0:
                return out
            block, self.text = self.text[:end], self.text[end + 2 :]
            kind, data = "message", []
            for line in block.decode("utf-8", "replace").split("\n"):
                if not line or line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "event":
                    kind = value
                elif name == "data":
                    data.append(value)
            if data:
                out.append((kind, json.loads("\n".join(data))))

    def close(self) -> None:
        self.sock.close()
