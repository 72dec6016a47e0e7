"""The upstream reply reader on its own: how a chunked body that arrived in one read is handed on."""

import asyncio

import pytest

from ollama_agent_router.upstream import UpstreamError, UpstreamResponse, _Conn


class _Pool:
    def __init__(self) -> None:
        self.returned: list[bool] = []

    def _give_back(self, conn: _Conn, reusable: bool) -> None:
        self.returned.append(reusable)


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def read_all(wire: bytes) -> tuple[list[bytes], list[bool]]:
    """Every item ``chunks()`` yields when the whole reply is already buffered, and how the connection went back."""

    async def run() -> list[bytes]:
        conn = _Conn()
        conn.connection_made(asyncio.Transport())  # never paused: every reply here is far below the high water
        conn.data_received(wire)
        resp = UpstreamResponse(pool, conn, 200, {"transfer-encoding": "chunked"}, None)  # type: ignore[arg-type]
        return [piece async for piece in resp.chunks()]

    pool = _Pool()
    return asyncio.run(asyncio.wait_for(run(), 5)), pool.returned


def test_first_event_of_a_burst_is_handed_on_before_the_rest_is_decoded():
    events = [b"data: {\"n\":%d,\"pad\":\"%s\"}\n\n" % (i, b"x" * 150) for i in range(200)]
    pieces, returned = read_all(chunked(*events))
    body = b"".join(events)
    assert b"".join(pieces) == body
    # The first item is small and holds the first event; everything else follows in one more item.
    assert len(pieces) == 2
    assert pieces[0].startswith(events[0]) and len(pieces[0]) < 1024
    assert returned == [True]


def test_a_small_reply_stays_one_piece():
    pieces, returned = read_all(chunked(b"data: a\n\n", b"data: [DONE]\n\n"))
    assert pieces == [b"data: a\n\ndata: [DONE]\n\n"]
    assert returned == [True]


# 1012 bytes of data make a reply of exactly the first piece's 1,024 bytes: the junk is still buffered.
@pytest.mark.parametrize("size", [10, 1012, 2000])
def test_bytes_after_the_end_of_a_reply_are_an_error(size):
    assert len(chunked(b"y" * 1012)) == 1024
    with pytest.raises(UpstreamError):
        read_all(chunked(b"y" * size) + b"HTTP/1.1 200 OK\r\n")
