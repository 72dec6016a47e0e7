"""Async job bodies are bounded (issue 15, items 2 and 8): a byte budget in total and per owner, a list of
summaries in pages, results kept in sqlite rather than memory, and a locked sqlite store answered at once."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest
from bounds_support import LoopWatch
from conftest import QWEN, chat_body, wait_for

from ollama_agent_router.errors import HttpError
from ollama_agent_router.jobstore import ByteBudget

CHAT = "/v1/chat/completions"
PADDING = "x" * 20_000  # a job of about 20 kB


def submit(stack, content: str = "Write a TypeScript function " + PADDING):
    return stack.request("POST", CHAT, chat_body(content, mode="async", preferredModels=[QWEN]))


def hold(stack):
    slot = stack.run(lambda: stack.app.scheduler.try_acquire(QWEN))
    assert slot is not None
    return slot


def test_the_budget_refuses_what_does_not_fit_with_a_clear_message():
    budget = ByteBudget(total_limit=100, owner_limit=60)
    budget.charge("a", 50)
    budget.check("a", 10)
    with pytest.raises(HttpError) as e:
        budget.check("a", 11)
    assert e.value.status == 429 and e.value.code == "job_storage_full" and "maxRetainedBytesPerOwner" in e.value.message
    budget.charge("b", 45)
    with pytest.raises(HttpError) as e:
        budget.check("c", 6)
    assert "(jobs.maxRetainedBytes)" in e.value.message
    budget.charge("a", -50)
    assert budget.by_owner == {"b": 45} and budget.total == 45


def test_job_bodies_have_a_byte_budget_per_owner_and_in_total(stack_factory):
    stack = stack_factory({"jobs": {"maxRetainedBytesPerOwner": "64kb", "maxRetainedBytes": "128kb"},
                           "queue": {"perUserMaxQueued": 100, "globalMaxQueued": 100}})
    jobs = stack.app.jobs
    slot = hold(stack)  # every job stays queued
    accepted = [submit(stack) for _ in range(3)]
    assert [r.status for r in accepted] == [202, 202, 202]
    refused = submit(stack)
    assert refused.status == 429, refused
    error = refused.json()["error"]
    assert error["code"] == "job_storage_full" and "jobs.maxRetainedBytesPerOwner" in error["message"]
    # Another caller still has room of its own, until the total is used up.
    other = chat_body("Write a TypeScript function " + PADDING, mode="async", preferredModels=[QWEN])
    for _ in range(3):
        stack.run(lambda: jobs.submit(other, QWEN, "code_generate", "normal", "key:other"))
    with pytest.raises(HttpError) as e:
        stack.run(lambda: jobs.submit(other, QWEN, "code_generate", "normal", "key:third"))
    assert e.value.status == 429 and "jobs.maxRetainedBytes)" in e.value.message
    # Finished jobs hold their results too; expired ones hold nothing.
    stack.run(slot.release)
    wait_for(lambda: stack.run(lambda: jobs.counts["succeeded"]) == 6)
    sizes = stack.run(lambda: [j.size for j in jobs.jobs.values()])
    assert stack.run(lambda: jobs.budget.total) == sum(sizes) > 6 * 20_000
    stack.run(lambda: [jobs._expire(j) for j in list(jobs.jobs.values())])
    assert stack.run(lambda: (jobs.budget.total, jobs.budget.by_owner)) == (0, {})
    assert submit(stack).status == 202


def test_the_list_holds_summaries_in_pages(stack_factory):
    stack = stack_factory({"queue": {"perUserMaxQueued": 100, "globalMaxQueued": 100}})
    slot = hold(stack)
    ids = [submit(stack).json()["id"] for _ in range(5)][::-1]  # newest first
    first = stack.request("GET", "/v1/jobs?limit=2").json()
    assert [j["id"] for j in first["jobs"]] == ids[:2] and first["next"] == ids[1]
    assert all("request_json" not in j and "result_json" not in j and j["task_type"] for j in first["jobs"])
    second = stack.request("GET", f"/v1/jobs?limit=2&after={first['next']}").json()
    assert [j["id"] for j in second["jobs"]] == ids[2:4]
    last = stack.request("GET", f"/v1/jobs?limit=2&after={second['next']}").json()
    assert [j["id"] for j in last["jobs"]] == ids[4:] and "next" not in last
    assert [j["id"] for j in stack.request("GET", "/v1/jobs").json()["jobs"]] == ids
    for query in ("limit=0", "limit=201", "limit=x", "limit=-1"):
        r = stack.request("GET", f"/v1/jobs?{query}")
        assert r.status == 400 and r.json()["error"]["code"] == "invalid_query", (query, r)
    r = stack.request("GET", "/v1/jobs?after=job_gone")
    assert r.status == 400 and r.json()["error"]["code"] == "invalid_cursor"
    record = stack.request("GET", f"/v1/jobs/{ids[0]}").json()  # one job at a time: the whole record
    assert PADDING in record["request_json"]
    stack.run(slot.release)


def sqlite_stack(stack_factory, tmp_path):
    return stack_factory({"jobs": {"store": "sqlite", "sqlitePath": str(tmp_path / "jobs.sqlite")},
                          "queue": {"perUserMaxQueued": 100, "globalMaxQueued": 100}})


def test_sqlite_keeps_finished_bodies_out_of_memory(stack_factory, tmp_path):
    stack = sqlite_stack(stack_factory, tmp_path)
    job_id = submit(stack).json()["id"]
    wait_for(lambda: stack.request("GET", f"/v1/jobs/{job_id}").json()["status"] == "succeeded")
    held = stack.run(lambda: stack.app.jobs.jobs[job_id])
    assert held.request_json is None and held.result_json is None and held.size > 20_000
    record = stack.request("GET", f"/v1/jobs/{job_id}").json()
    assert PADDING in record["request_json"] and '"chat.completion"' in record["result_json"]
    result = stack.request("GET", f"/v1/jobs/{job_id}/result")
    assert result.status == 200 and result.json()["object"] == "chat.completion"


class Locker:
    """Another process holding the job database's write lock until closed."""

    def __init__(self, path) -> None:
        code = ("import sqlite3, sys\n"
                f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
                "db.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\nsys.stdin.read()\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "locked"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def test_a_locked_sqlite_store_is_a_quick_503_and_the_loop_keeps_going(stack_factory, tmp_path):
    stack = sqlite_stack(stack_factory, tmp_path)
    slot = hold(stack)
    queued = submit(stack).json()["id"]
    watch = LoopWatch()
    stack.call(watch.start())
    locker = Locker(tmp_path / "jobs.sqlite")
    try:
        started = time.monotonic()
        r = submit(stack)
        took = time.monotonic() - started
        assert r.status == 503 and r.json()["error"]["code"] == "job_store_locked", r
        assert took < 1.0 and r.headers["retry-after"] == "1"
        # A job that finishes meanwhile keeps its result until the store can take it.
        stack.run(slot.release)
        wait_for(lambda: stack.request("GET", f"/v1/jobs/{queued}").json()["status"] == "succeeded")
        assert '"chat.completion"' in stack.request("GET", f"/v1/jobs/{queued}").json()["result_json"]
        worst = stack.call(watch.stop())
        assert worst < 0.25, f"the loop was held for {worst * 1000:.0f} ms"
    finally:
        locker.close()
    db = sqlite3.connect(tmp_path / "jobs.sqlite")
    wait_for(lambda: db.execute("SELECT result_json FROM jobs WHERE id = ?", (queued,)).fetchone()[0], timeout=5)
    db.close()
    assert submit(stack).status == 202
