"""Key derivation runs off the event loop (issue 15, item 6): salted keys (pbkdf2, scrypt) are checked on a
small thread pool, one at a time per client address and a few at a time in all, after the failed-auth limit."""

from __future__ import annotations

import http.client
import json
import threading

from access_support import LOCKED, access
from bounds_support import LoopWatch
from conftest import chat_body

from ollama_agent_router.access.keys import hash_key

PASSWORD = "correct horse battery staple"
PBKDF2 = hash_key(PASSWORD, "pbkdf2-sha256")  # full strength: a few hundred ms of CPU per check


def post(port: int, key: str, source: str = "127.0.0.1") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(chat_body("hi")),
                     headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def concurrently(calls) -> list:
    out: list = [None] * len(calls)

    def run(i, fn):
        out[i] = fn()

    threads = [threading.Thread(target=run, args=(i, fn)) for i, fn in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def human_key_stack(stack_factory):
    return stack_factory(access(standalone=LOCKED, keys=[{"id": "human", "keyHash": PBKDF2, "scopes": ["standalone"]}]))


def test_wrong_salted_keys_do_not_hold_the_loop(stack_factory):
    stack = human_key_stack(stack_factory)
    watch = LoopWatch()
    stack.call(watch.start())
    wrong = concurrently([lambda i=i: post(stack.port, f"wrong password number {i}", f"127.0.0.{2 + i}")
                          for i in range(3)])
    worst = stack.call(watch.stop())
    assert [status for status, _ in wrong] == [401, 401, 401], wrong
    assert worst < 0.25, f"the loop was held for {worst * 1000:.0f} ms"
    assert post(stack.port, PASSWORD)[0] == 200
    assert post(stack.port, PASSWORD)[0] == 200  # remembered: no second derivation


def test_one_address_derives_one_key_at_a_time(stack_factory):
    stack = human_key_stack(stack_factory)
    replies = concurrently([lambda i=i: post(stack.port, f"another wrong password {i}") for i in range(4)])
    statuses = sorted(status for status, _ in replies)
    assert statuses[0] == 401 and 429 in statuses, replies
    assert all(body["error"]["code"] in ("invalid_api_key", "auth_rate_limited") for _, body in replies)
    assert stack.run(lambda: stack.app.access.deriver.busy) == set()
