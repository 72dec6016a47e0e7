"""The open-files limit and the connection cap (issue 15, item 5), with the rlimit calls replaced by plain data.
The live check, a router under ``ulimit -n 256``, is a drill case: tests/drills/test_drill_hostile.py."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

from ollama_agent_router.http import fdlimit
from ollama_agent_router.log import Logger

INF = -1


class FakeResource:
    RLIMIT_NOFILE = 7
    RLIM_INFINITY = INF

    def __init__(self, soft: int, hard: int, refuse: bool = False) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse

    def getrlimit(self, which: int) -> tuple[int, int]:
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        if self.refuse or (self.limits[1] != INF and limits[0] > self.limits[1]):
            raise ValueError("not allowed")
        self.limits = limits


def fit(monkeypatch, soft: int, hard: int, max_connections: int = 1024, refuse: bool = False):
    fake = FakeResource(soft, hard, refuse)
    monkeypatch.setattr(fdlimit, "resource", fake)
    stream = io.StringIO()
    cap = fdlimit.fit_connections(max_connections, Logger("info", stream))
    return cap, fake.limits[0], [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("soft,hard", [(1024, 4096), (1024, INF), (256, 1 << 20)])
def test_the_soft_limit_is_raised_as_far_as_the_cap_needs(monkeypatch, soft, hard):
    cap, now, lines = fit(monkeypatch, soft, hard)
    assert cap == 1024 and now == 1024 + 128
    assert [line["event"] for line in lines] == ["open_files_limit_raised"]


def test_a_limit_already_high_enough_is_left_alone(monkeypatch):
    assert fit(monkeypatch, 20000, 20000) == (1024, 20000, [])
    assert fit(monkeypatch, INF, INF) == (1024, INF, [])


@pytest.mark.parametrize("soft,hard,refuse,cap", [(1024, 1024, False, 896), (256, 256, False, 192),
                                                  (1024, 4096, True, 896), (600, 1000, False, 875)])
def test_the_cap_is_lowered_under_the_limit_that_holds_and_says_so(monkeypatch, soft, hard, refuse, cap):
    got, now, lines = fit(monkeypatch, soft, hard, refuse=refuse)
    assert got == cap and now - got >= 64
    lowered = [line for line in lines if line["event"] == "max_connections_lowered"]
    assert len(lowered) == 1 and lowered[0]["now"] == cap and lowered[0]["openFilesLimit"] == now


async def lines_logged(stream: io.StringIO, n: int) -> None:
    while stream.getvalue().count("\n") < n:
        await asyncio.sleep(0.01)


def test_failed_accepts_are_counted_in_one_line_per_interval():
    async def main() -> tuple[list[dict], list[dict]]:
        loop = asyncio.get_running_loop()
        stream = io.StringIO()
        others: list[dict] = []
        loop.set_exception_handler(lambda loop, context: others.append(context))
        fdlimit.AcceptErrorLog.install(loop, Logger("warning", stream))
        fdlimit.AcceptErrorLog.install(loop, Logger("warning", stream))  # a second listener: still one handler
        handler = loop.get_exception_handler()
        assert isinstance(handler, fdlimit.AcceptErrorLog)
        handler.interval = 0.2
        failure = {"message": fdlimit.ACCEPT_FAILED, "exception": OSError(24, "Too many open files")}
        for _ in range(1000):  # what one loop turn of Python 3.11's accept loop reports
            loop.call_exception_handler(failure)
        loop.call_exception_handler({"message": "something else"})
        await asyncio.wait_for(lines_logged(stream, 1), 5)  # on the next loop turn
        for _ in range(50):
            loop.call_exception_handler(failure)
        await asyncio.sleep(0)
        assert stream.getvalue().count("\n") == 1  # the next line waits for the interval
        await asyncio.wait_for(lines_logged(stream, 2), 5)
        return [json.loads(line) for line in stream.getvalue().splitlines()], others

    lines, others = asyncio.run(main())
    assert [(line["event"], line["failures"]) for line in lines] == [("accept_failed", 1000), ("accept_failed", 50)]
    assert "Too many open files" in lines[0]["error"] and [c["message"] for c in others] == ["something else"]
