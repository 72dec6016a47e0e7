"""The sqlite job store: durable inserts, write batching, recovery after a stop and after a real kill -9."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest
from conftest import QWEN, TEST_CONFIG, VIBE, chat_body, merge, wait_for

from ollama_agent_router.jobstore import Job, SqliteStore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_job(job_id, status="queued", model=VIBE, attempts=0, **kw):
    return Job(id=job_id, status=status, task_type="simple_chat", selected_model=model, candidates=(model, QWEN),
               path="/v1/chat/completions", request_json=json.dumps(chat_body("Hello there")), priority=50,
               created_at=kw.pop("created_at", 1_700_000_000.0), attempts=attempts, **kw)


def sqlite_config(path, **jobs):
    return {"jobs": {"store": "sqlite", "sqlitePath": str(path), **jobs}}


def test_store_roundtrip_wal_and_batched_saves(tmp_path):
    path = tmp_path / "jobs.sqlite"

    async def main():
        store = SqliteStore(str(path))
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        job = make_job("job_a", owner="ip:127.0.0.1")
        store.insert(job)
        other = sqlite3.connect(path)  # a second connection sees the insert at once: it is committed
        assert other.execute("SELECT status FROM jobs WHERE id='job_a'").fetchone() == ("queued",)
        job.status, job.attempts, job.result_json = "succeeded", 1, '{"ok":true}'
        store.save(job)
        store.save(job)
        assert other.execute("SELECT status FROM jobs").fetchone() == ("queued",)  # not yet: end of loop turn
        await asyncio.sleep(0)
        assert other.execute("SELECT status, attempts FROM jobs").fetchone() == ("succeeded", 1)
        store.insert(make_job("job_b", created_at=1_700_000_001.0))
        loaded = store.load()
        assert [j.id for j in loaded] == ["job_a", "job_b"]
        assert loaded[0].candidates == (VIBE, QWEN) and loaded[0].owner == "ip:127.0.0.1"
        # A finished job's bodies stay in the database until asked for; a queued one's request is read back.
        assert loaded[0].result_json is None and loaded[0].request_json is None and loaded[0].offloaded
        assert store.bodies("job_a") == (job.request_json, '{"ok":true}')
        assert loaded[1].request_json == json.dumps(chat_body("Hello there")) and not loaded[1].offloaded
        store.delete([job])
        await asyncio.sleep(0)  # deletions are batched with the saves of the same loop turn
        assert [j.id for j in store.load()] == ["job_b"]
        other.close()
        store.close()

    asyncio.run(main())


def restart(stack):
    """Stop the router (no grace) and start a new one on the same simulator and database."""
    from ollama_agent_router.app import App
    from ollama_agent_router.log import Logger

    async def go():
        await stack.app.stop(0)
        stack.app = App(stack.cfg, log=Logger("debug", stack.app.log.stream), gpu_backend=stack.sim.gpu_backend())
        return await stack.app.start("127.0.0.1", 0)

    stack.port = stack.call(go())


def status(stack, job_id):
    r = stack.request("GET", f"/v1/jobs/{job_id}")
    return r.json()["status"] if r.status == 200 else r.status


def test_jobs_survive_a_restart(stack_factory, tmp_path):
    stack = stack_factory(sqlite_config(tmp_path / "jobs.sqlite"), sim_kw={"tokens_per_second": 50, "reply_tokens": 50})
    done = stack.request("POST", "/v1/chat/completions", chat_body("hi", mode="async", maxExecutionTimeMs=5000))
    done_id = done.json()["id"]
    wait_for(lambda: status(stack, done_id) == "succeeded", timeout=10)
    slot = stack.run(lambda: stack.app.scheduler.try_acquire(QWEN))
    code = chat_body("Write a TypeScript function", mode="async", preferredModels=[QWEN])
    queued = [stack.request("POST", "/v1/chat/completions", code).json()["id"] for _ in range(2)]
    running = stack.request("POST", "/v1/chat/completions", chat_body("hi", mode="async")).json()["id"]
    wait_for(lambda: status(stack, running) == "running")
    stack.run(slot.release)  # (the router is stopped before the queued jobs can finish)
    restart(stack)
    assert status(stack, done_id) == "succeeded"
    assert stack.request("GET", f"/v1/jobs/{done_id}/result").status == 200
    for job_id in queued + [running]:
        wait_for(lambda: status(stack, job_id) == "succeeded", timeout=15)
    # The interrupted run did not use up the only attempt (jobs.maxAttempts is 1).
    assert stack.request("GET", f"/v1/jobs/{running}").json()["attempts"] == 1


def test_recovery_of_interrupted_and_orphaned_jobs(stack_factory, tmp_path):
    path = tmp_path / "jobs.sqlite"

    async def seed():
        store = SqliteStore(str(path))
        store.insert(make_job("job_again", status="running", attempts=1, created_at=1_700_000_001.0))
        store.insert(make_job("job_gone", status="queued", model="removed:1b", created_at=1_700_000_002.0))
        store.close()

    asyncio.run(seed())
    stack = stack_factory(merge(sqlite_config(path, maxAttempts=2), {"jobs": {"resultTtlSeconds": 10**9}}))
    wait_for(lambda: status(stack, "job_again") == "succeeded")  # it had one attempt left of two
    assert stack.request("GET", "/v1/jobs/job_again").json()["attempts"] == 2
    gone = stack.request("GET", "/v1/jobs/job_gone/result")
    assert gone.status == 500 and gone.json()["error"]["code"] == "model_removed"


def test_a_running_job_without_attempts_left_fails_with_a_reason(stack_factory, tmp_path):
    path = tmp_path / "jobs.sqlite"

    async def seed():
        store = SqliteStore(str(path))
        store.insert(make_job("job_spent", status="running", attempts=1, created_at=4_000_000_000.0))
        store.close()

    asyncio.run(seed())
    stack = stack_factory(sqlite_config(path))
    r = stack.request("GET", "/v1/jobs/job_spent/result")
    assert r.status == 500 and r.json()["error"]["code"] == "job_interrupted"
    assert "no attempts left" in r.json()["error"]["message"]
    assert not any(c["path"] == "/v1/chat/completions" for c in stack.sim.calls)


# ---- kill -9 ----------------------------------------------------------------------------------------

class SimThread:
    """The simulator on its own loop and thread, so it outlives the router processes."""

    def __init__(self, **kw):
        from ollama_agent_router.config.parse import parse_config
        from ollama_agent_router.simulator.server import OllamaSimulator

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = OllamaSimulator.from_config(parse_config(TEST_CONFIG), **kw)
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, json.dumps(body) if body is not None else None, {"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def up(port):
    try:
        return call(port, "GET", "/health")[0] == 200
    except OSError:
        return False


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sqlite_jobs_survive_kill_9(tmp_path):
    sim = SimThread(tokens_per_second=25, reply_tokens=8)  # about 0.3 s a job, two at a time
    port = free_port()
    cfg = merge(TEST_CONFIG, {
        "server": {"port": port},
        "ollama": {"baseUrl": sim.sim.url},
        "jobs": {"store": "sqlite", "sqlitePath": str(tmp_path / "jobs.sqlite"), "maxAttempts": 3,
                 "retryBackoffMs": 0},
        "queue": {"globalMaxQueued": 100, "perUserMaxQueued": 100},
    })
    cfg_path = tmp_path / "router.yaml"
    cfg_path.write_text(json.dumps(cfg))  # JSON is YAML
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "ollama_agent_router", "serve", "-c", str(cfg_path), "--log-level", "warning"]
    log = open(tmp_path / "router.log", "wb")
    procs = []
    try:
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: up(port), timeout=20, interval=0.05)
        accepted = []
        for i in range(12):
            code, body = call(port, "POST", "/v1/chat/completions", chat_body(f"Hello there {i}", mode="async"))
            assert code == 202
            accepted.append(body["id"])

        def states():
            return [call(port, "GET", f"/v1/jobs/{j}")[1]["status"] for j in accepted]

        wait_for(lambda: "succeeded" in states() and "running" in states(), timeout=20)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: up(port), timeout=20, interval=0.05)
        wait_for(lambda: all(s in ("succeeded", "failed") for s in states()), timeout=30)
        listed = [j["id"] for j in call(port, "GET", "/v1/jobs")[1]["jobs"]]
        assert sorted(listed) == sorted(accepted)  # none lost, none duplicated
        for job_id in accepted:
            code, record = call(port, "GET", f"/v1/jobs/{job_id}")
            assert record["status"] == "succeeded" or json.loads(record["error_json"])["message"]
            if record["status"] == "succeeded":
                assert json.loads(record["result_json"])["object"] == "chat.completion"
        assert all(call(port, "GET", f"/v1/jobs/{j}")[1]["status"] == "succeeded" for j in accepted)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        log.close()
        sim.stop()
