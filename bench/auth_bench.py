"""Cost of authentication plus rate limiting per request: ``AccessControl.authorize`` in a loop.

Run: ``python bench/auth_bench.py`` (from the repository root). Prints microseconds per request for the
common cases, best and median of several rounds (the best is the least disturbed by other load on the
machine); the target is <= 20 us. Results are recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from conftest import make_config  # noqa: E402  (the test suite's reference config)

from ollama_agent_router.access.control import AccessControl  # noqa: E402
from ollama_agent_router.access.keys import generate_key  # noqa: E402

N = 20_000  # requests per round
ROUNDS = 7
BIG = {"requests": 1_000_000_000, "windowSeconds": 60}  # a limit that is checked but never reached


class FakeRequest:
    """The attributes of httpserver.Request that access control reads."""

    def __init__(self, headers: dict[str, str], client_ip: str = "127.0.0.1") -> None:
        self.headers = headers
        self.client_ip = client_ip
        self.method = "POST"
        self.path = "/v1/chat/completions"
        self.request_id = "bench"
        self.tls = None
        self.extra_headers: list[tuple[str, str]] = []


def control(access: dict | None) -> AccessControl:
    return AccessControl(make_config({"access": access} if access else None))


def policy(keys: list[dict], anonymous: str = "reject", limit: dict | None = None) -> dict:
    standalone: dict[str, Any] = {"enabled": True, "auth": {"requireApiKey": anonymous == "reject",
                                                            "anonymous": anonymous}}
    if limit:
        standalone["defaultLimit"] = limit
    return {"managed": {"planes": {"standalone": standalone}, "apiKeys": keys}}


async def measure(ac: AccessControl, headers: dict[str, str], plane: str = "standalone",
                  ips: list[str] | None = None) -> tuple[float, float]:
    """(best, median) microseconds per ``authorize`` call over ROUNDS rounds of N calls."""
    reqs = [FakeRequest(headers, ip) for ip in (ips or ["127.0.0.1"])]
    for req in reqs:  # warm caches (the salted-key LRU, bucket creation)
        await ac.authorize(req, plane)
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for i in range(N):
            req = reqs[i % len(reqs)]
            req.extra_headers = []
            await ac.authorize(req, plane)
        rounds.append((time.perf_counter() - start) / N * 1e6)
    return min(rounds), statistics.median(rounds)


async def main() -> None:
    key, key_hash = generate_key()
    many = [{"id": f"k{i}", "keyHash": generate_key()[1], "scopes": ["standalone"]} for i in range(10_000)]
    salt = bytes(16)
    password = "correct horse battery staple"
    pbkdf2 = f"pbkdf2-sha256:600000:{salt.hex()}:{hashlib.pbkdf2_hmac('sha256', password.encode(), salt, 600000).hex()}"
    with tempfile.TemporaryDirectory():
        cases = [
            ("no access section (open)", control(None), {"authorization": "Bearer sk-none"}, None),
            ("sha256 key, per-key limit", control(policy([
                {"id": "k", "keyHash": key_hash, "scopes": ["standalone"], "limits": {"standalone": BIG}}])),
             {"authorization": f"Bearer {key}"}, None),
            ("sha256 key among 10,000 keys, limit", control(policy(many + [
                {"id": "k", "keyHash": key_hash, "scopes": ["standalone"], "limits": {"standalone": BIG}}])),
             {"authorization": f"Bearer {key}"}, None),
            ("x-api-key, no limit", control(policy([{"id": "k", "keyHash": key_hash, "scopes": ["standalone"]}])),
             {"x-api-key": key}, None),
            ("anonymous limited, 1,000 client IPs", control(policy(
                [{"id": "k", "keyHash": key_hash, "scopes": ["standalone"]}], "limited", BIG)), {},
             [f"10.0.{i // 250}.{i % 250}" for i in range(1000)]),
            ("pbkdf2 key (600k iterations), cached", control(policy(
                [{"id": "k", "keyHash": pbkdf2, "scopes": ["standalone"], "limits": {"standalone": BIG}}])),
             {"authorization": f"Bearer {password}"}, None),
        ]
        print(f"Python {sys.version.split()[0]}, {ROUNDS} rounds of {N} requests per case; us/request")
        print(f"{'case':40s} {'best':>6s} {'median':>7s}")
        for name, ac, headers, ips in cases:
            best, median = await measure(ac, headers, ips=ips)
            print(f"{name:40s} {best:6.2f} {median:7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
