"""GCRA rate limiting: exact bursts, steady refill, no boundary double burst, headers, pruning, concurrency."""

from __future__ import annotations

import http.client
import threading

from access_support import access, api_key, bearer, plane, secret

from ollama_agent_router.access.ratelimit import RateLimiter
from ollama_agent_router.config.schema import TrafficLimit

S = 1_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1000 * S

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * S)


def test_a_burst_of_exactly_the_limit_then_steady_refill():
    clock = Clock()
    rl = RateLimiter(clock)
    limit = TrafficLimit(3, 60)  # 3 at once, then one every 20 s
    results = [rl.check("k", limit) for _ in range(4)]
    assert [d.allowed for d in results] == [True, True, True, False]
    assert [d.remaining for d in results] == [2, 1, 0, 0]
    assert results[3].retry_after == 20 and results[3].reset_after == 60
    clock.advance(19.9)
    assert not rl.check("k", limit).allowed  # rejected requests cost nothing...
    clock.advance(0.1)
    assert rl.check("k", limit).allowed  # ...so the refill arrives exactly on time
    assert not rl.check("k", limit).allowed


def test_no_double_burst_at_a_window_boundary():
    clock = Clock()
    rl = RateLimiter(clock)
    limit = TrafficLimit(10, 60)
    clock.advance(59)
    assert sum(rl.check("k", limit).allowed for _ in range(20)) == 10
    clock.advance(2)  # a fixed window would reset here and allow 10 more
    assert sum(rl.check("k", limit).allowed for _ in range(20)) == 0
    clock.advance(60)
    assert sum(rl.check("k", limit).allowed for _ in range(20)) == 10


def test_limits_that_do_not_divide_evenly_are_exact():
    clock = Clock()
    rl = RateLimiter(clock)
    limit = TrafficLimit(7, 3)
    assert sum(rl.check("k", limit).allowed for _ in range(100)) == 7
    clock.advance(3)
    assert sum(rl.check("k", limit).allowed for _ in range(100)) == 7


def test_buckets_are_independent_and_follow_a_changed_limit():
    clock = Clock()
    rl = RateLimiter(clock)
    assert rl.check("a", TrafficLimit(1, 60)).allowed and not rl.check("a", TrafficLimit(1, 60)).allowed
    assert rl.check("b", TrafficLimit(1, 60)).allowed
    assert rl.check("a", TrafficLimit(5, 60)).allowed  # the admin raised the limit: a fresh bucket
    assert rl.reset(lambda k: k == "a") == 1 and rl.check("a", TrafficLimit(1, 60)).allowed
    assert not rl.check("b", TrafficLimit(1, 60)).allowed


def test_blocked_peeks_without_counting():
    clock = Clock()
    rl = RateLimiter(clock)
    limit = TrafficLimit(2, 10)
    assert rl.blocked("k", limit) is None
    rl.check("k", limit)
    assert rl.blocked("k", limit) is None
    rl.check("k", limit)
    blocked = rl.blocked("k", limit)
    assert blocked is not None and blocked.retry_after == 5
    clock.advance(5)
    assert rl.blocked("k", limit) is None and rl.check("k", limit).allowed


def test_headers():
    clock = Clock()
    rl = RateLimiter(clock)
    limit = TrafficLimit(2, 60)
    assert dict(rl.check("k", limit).headers(1_700_000_000.2)) == {
        "X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "1700000031"}
    rl.check("k", limit)
    clock.advance(3)
    assert dict(rl.check("k", limit).headers(1_700_000_000.0)) == {
        "X-RateLimit-Limit": "2", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1700000057",
        "Retry-After": "27"}


def test_full_buckets_are_pruned_so_memory_stays_bounded():
    clock = Clock()
    rl = RateLimiter(clock)
    limit = TrafficLimit(5, 1)
    for i in range(5000):
        rl.check(("ip", i), limit)
        clock.advance(0.001)
    # Only buckets touched within the last second can still hold anything.
    assert len(rl.buckets) <= 2 * 1001
    clock.advance(2)
    rl.prune()
    assert rl.buckets == {}


def test_64_concurrent_clients_get_exactly_the_limit(stack_factory):
    override = access(runtime=plane(require=True, anonymous="reject"),
                      keys=[api_key("rt", ["runtimeAgent"], limits={"runtimeAgent": {"requests": 100,
                                                                                     "windowSeconds": 3600}})])
    stack = stack_factory(override)
    statuses: list[int] = []
    barrier = threading.Barrier(64)
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=30)
        barrier.wait()
        for _ in range(3):
            conn.request("GET", "/v1/router/gpu", headers=bearer(secret("rt")))
            resp = conn.getresponse()
            resp.read()
            with lock:
                statuses.append(resp.status)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(statuses) == 192
    assert statuses.count(200) == 100 and statuses.count(429) == 92
