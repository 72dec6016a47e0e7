"""Raw HTTP helpers for the server's tests: an exchange over a real socket, and a transport recorded by hand."""

from __future__ import annotations

import asyncio
import socket


def raw_exchange(port: int, data: bytes, timeout: float = 5) -> tuple[bytes, bool]:
    """Send ``data`` and read until the server closes: (bytes read, whether it closed within ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
            return out, True
        except socket.timeout:
            return out, False


class FakeTransport(asyncio.Transport):
    """Records what a connection writes and whether it reads; ``high_water`` bytes written without a
    ``drain`` make it push back (``pause_writing``), like a socket whose peer stops reading."""

    def __init__(self, protocol: asyncio.Protocol | None = None, high_water: int | None = None) -> None:
        super().__init__()
        self.protocol = protocol
        self.high_water = high_water
        self.writes: list[bytes] = []
        self.buffered = 0
        self.paused_writing = False
        self.reading = True
        self.closing = False
        self.eof = False

    @property
    def written(self) -> bytes:
        return b"".join(self.writes)

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        self.buffered += len(data)
        if self.high_water is not None and self.buffered > self.high_water and not self.paused_writing:
            self.paused_writing = True
            assert self.protocol is not None
            self.protocol.pause_writing()

    def drain(self) -> None:
        """The peer read everything written so far."""
        self.buffered = 0
        if self.paused_writing:
            self.paused_writing = False
            assert self.protocol is not None
            self.protocol.resume_writing()

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True
