"""The HTTP server's connection against a fake transport: what it writes when the peer is gone."""

import asyncio

from ollama_agent_router.httpserver import HttpServer, StreamResponse, _Connection


class DyingTransport(asyncio.Transport):
    """Takes ``accepted`` writes, then fails like a socket whose peer reset it: asyncio marks such a
    transport closing at once and reports the lost connection only on a later loop turn."""

    def __init__(self, accepted: int) -> None:
        super().__init__()
        self.accepted = accepted
        self.writes: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data) -> None:
        self.writes.append(bytes(data))
        if len(self.writes) >= self.accepted:
            self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def test_a_stream_stops_writing_once_its_transport_is_closing():
    produced = []

    async def events():
        for i in range(50):  # all ready at once: nothing here gives the loop a turn
            produced.append(i)
            yield b"data: %d\n\n" % i

    async def handler(req):
        return StreamResponse(200, events())

    async def run() -> DyingTransport:
        server = HttpServer(handler)
        conn = _Connection(server)
        transport = DyingTransport(accepted=2)  # the head and the first event get out
        conn.connection_made(transport)
        conn.data_received(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.task is not None
        await conn.task
        conn.connection_lost(ConnectionResetError())
        return transport

    transport = asyncio.run(asyncio.wait_for(run(), 5))
    assert transport.writes[0].startswith(b"HTTP/1.1 200")
    # One write that failed at most; without the check every remaining event and the terminator
    # would go into the dead socket (asyncio logs "socket.send() raised exception." from the fifth).
    assert len(transport.writes) <= 3, transport.writes
    assert b"0\r\n\r\n" not in transport.writes
    assert len(produced) < 50
