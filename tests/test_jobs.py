"""Async jobs end to end against the simulator: lifecycle, result codes, cancel, retries, expiry, retention."""

from __future__ import annotations

import json
import re

import pytest
from conftest import DEEPSEEK, QWEN, VIBE, chat_body, wait_for

from ollama_agent_router.simulator.run import Fault

CODE = "Write a TypeScript function to parse JSON"  # code_generate: qwen first, deepseek next


def submit(stack, content="Hello there", **router):
    if content == CODE:
        router.setdefault("preferredModels", [QWEN])  # stays on qwen even while a test holds its slot
    r = stack.request("POST", "/v1/chat/completions", chat_body(content, mode="async", **router))
    assert r.status == 202, r
    return r


def job(stack, job_id):
    return stack.request("GET", f"/v1/jobs/{job_id}").json()


def status_is(stack, job_id, *statuses):
    return lambda: job(stack, job_id)["status"] in statuses


def chat_calls(stack, model=None):
    return stack.chat_calls(model)


def hold(stack, model):
    """Take a slot on ``model`` directly, as a running request would."""
    slot = stack.run(lambda: stack.app.scheduler.try_acquire(model))
    assert slot is not None
    return slot


def release(stack, slot):
    stack.run(slot.release)


def has_null(value):
    if value is None:
        return True
    if isinstance(value, dict):
        return any(has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(has_null(v) for v in value)
    return False


def test_job_lifecycle_result_codes_and_record(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 40, "reply_tokens": 8})
    slot = hold(stack, QWEN)
    r = submit(stack, CODE)
    body = r.json()
    assert re.fullmatch(r"job_test-node_[A-Za-z0-9_-]{16}", body["id"])
    assert body["object"] == "router.job" and body["status"] == "queued"
    assert body["message"] == "Job accepted for asynchronous processing, as requested."  # not "Heavy load"
    assert body["router"]["preferredModel"] == QWEN and body["router"]["position"] == 1
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    pending = stack.request("GET", f"/v1/jobs/{body['id']}/result")
    assert pending.status == 202 and pending.json() == {"status": "queued"} and pending.headers["retry-after"] == "1"
    release(stack, slot)
    wait_for(status_is(stack, body["id"], "running"))
    assert stack.request("GET", f"/v1/jobs/{body['id']}/result").json() == {"status": "running"}
    wait_for(status_is(stack, body["id"], "succeeded"))
    result = stack.request("GET", f"/v1/jobs/{body['id']}/result")
    assert result.status == 200
    completion = result.json()
    assert completion["object"] == "chat.completion" and completion["model"] == QWEN and "router" not in completion
    record = job(stack, body["id"])
    assert set(record) == {"id", "status", "task_type", "selected_model", "request_json", "result_json", "error_json",
                           "attempts", "priority", "created_at", "started_at", "finished_at", "expires_at"}
    assert record["task_type"] == "code_generate" and record["selected_model"] == QWEN and record["attempts"] == 1
    assert record["priority"] == 50 and record["error_json"] is None
    assert json.loads(record["request_json"])["router"] == {"mode": "async", "preferredModels": [QWEN]}
    assert json.loads(record["result_json"]) == completion
    # TTL counts from completion: expires_at = finished_at + resultTtlSeconds (3600).
    from ollama_agent_router.jsonutil import parse_iso

    assert parse_iso(record["expires_at"]) - parse_iso(record["finished_at"]) == pytest.approx(3600, abs=0.002)
    sent = chat_calls(stack, QWEN)[-1]["body"]
    assert sent["stream"] is False and "router" not in sent and sent["model"] == QWEN
    listed = stack.request("GET", "/v1/jobs").json()["jobs"]
    assert listed[0]["id"] == body["id"]
    metrics = stack.request("GET", "/metrics").body.decode()
    assert 'oar_jobs_finished_total{status="succeeded"} 1' in metrics
    assert 'oar_jobs{status="succeeded"} 1' in metrics


def test_unknown_job_is_404(stack):
    for method, path in (("GET", "/v1/jobs/job_x"), ("GET", "/v1/jobs/job_x/result"), ("DELETE", "/v1/jobs/job_x")):
        r = stack.request(method, path)
        assert r.status == 404 and r.json()["error"]["message"] == "Job not found"


def test_failed_job_is_500_with_the_error_and_no_stack_trace(stack_factory):
    stack = stack_factory({"jobs": {"maxAttempts": 3, "retryBackoffMs": 0}})
    stack.run(lambda: stack.sim.inject(VIBE, Fault(status=400, message="invalid tool call arguments")))
    job_id = submit(stack).json()["id"]
    wait_for(status_is(stack, job_id, "failed"))
    r = stack.request("GET", f"/v1/jobs/{job_id}/result")
    assert r.status == 500
    body = r.json()
    assert body["status"] == "failed"
    assert body["error"]["message"] == "invalid tool call arguments" and body["error"]["code"] == "upstream_rejected"
    assert "Traceback" not in r.body.decode() and "stack" not in body["error"]
    assert job(stack, job_id)["attempts"] == 1 and len(chat_calls(stack)) == 1  # a 4xx is never retried


def test_retry_moves_to_the_next_candidate_after_a_backoff(stack_factory):
    stack = stack_factory({"jobs": {"maxAttempts": 2, "retryBackoffMs": 100}})
    stack.run(lambda: stack.sim.inject(QWEN, Fault(status=503)))
    job_id = submit(stack, CODE).json()["id"]
    wait_for(status_is(stack, job_id, "succeeded"))
    record = job(stack, job_id)
    assert record["attempts"] == 2 and record["selected_model"] == DEEPSEEK and record["error_json"] is None
    calls = chat_calls(stack)
    assert [c["model"] for c in calls] == [QWEN, DEEPSEEK]
    assert calls[1]["t"] - calls[0]["t"] >= 0.1  # the backoff
    assert job(stack, job_id)["result_json"]


def test_retries_stop_at_max_attempts(stack_factory):
    stack = stack_factory({"jobs": {"maxAttempts": 2, "retryBackoffMs": 0}})
    stack.run(lambda: stack.sim.inject("*", Fault(status=500, message="llama runner process has terminated",
                                                  times=None)))
    job_id = submit(stack, CODE).json()["id"]
    wait_for(status_is(stack, job_id, "failed"))
    assert job(stack, job_id)["attempts"] == 2 and len(chat_calls(stack)) == 2
    error = json.loads(job(stack, job_id)["error_json"])
    assert "llama runner process has terminated" in error["message"] and error["upstreamStatus"] == 500


def test_cancel_a_queued_job_withdraws_it(stack):
    slot = hold(stack, QWEN)
    job_id = submit(stack, CODE).json()["id"]
    assert stack.run(lambda: stack.app.scheduler.counts(QWEN)) == (1, 1)
    r = stack.request("DELETE", f"/v1/jobs/{job_id}")
    assert r.status == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert stack.run(lambda: stack.app.scheduler.counts(QWEN)) == (0, 1)
    gone = stack.request("GET", f"/v1/jobs/{job_id}/result")
    assert gone.status == 410 and not has_null(gone.json())
    assert gone.json()["error"]["code"] == "job_cancelled" and gone.json()["error"]["type"] == "invalid_request_error"
    release(stack, slot)
    assert stack.run(lambda: stack.app.scheduler.total_running) == 0
    assert chat_calls(stack) == []
    # Cancelling a finished job changes nothing.
    assert stack.request("DELETE", f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_cancel_a_running_job_aborts_the_upstream_request(stack_factory):
    stack = stack_factory(sim_kw={"tokens_per_second": 20, "reply_tokens": 400})
    job_id = submit(stack).json()["id"]
    wait_for(lambda: stack.sim.in_flight.get(VIBE, 0) == 1)
    assert stack.request("DELETE", f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    wait_for(lambda: stack.sim.cancelled == 1 and stack.sim.in_flight.get(VIBE, 0) == 0)
    wait_for(lambda: stack.run(lambda: stack.app.scheduler.total_running) == 0)
    assert job(stack, job_id)["status"] == "cancelled"
    assert stack.request("GET", f"/v1/jobs/{job_id}/result").status == 410


def test_a_queued_job_that_expires_never_reaches_ollama(stack_factory):
    stack = stack_factory({"jobs": {"resultTtlSeconds": 1, "cleanupIntervalMs": 50}})
    slot = hold(stack, QWEN)
    job_id = submit(stack, CODE).json()["id"]
    wait_for(status_is(stack, job_id, "expired"), timeout=5)
    assert stack.run(lambda: stack.app.scheduler.counts(QWEN)) == (0, 1)
    release(stack, slot)
    r = stack.request("GET", f"/v1/jobs/{job_id}/result")
    assert r.status == 410 and r.json()["error"]["code"] == "job_expired"
    assert chat_calls(stack) == []


def test_an_expired_job_is_not_started_even_before_cleanup_runs(stack_factory):
    stack = stack_factory({"jobs": {"resultTtlSeconds": 1, "cleanupIntervalMs": 3_600_000}})
    jobs = stack.app.jobs
    slot = hold(stack, QWEN)
    job_id = submit(stack, CODE).json()["id"]
    real = jobs.clock
    stack.run(lambda: setattr(jobs, "clock", lambda: real() + 5))  # past its start deadline
    release(stack, slot)
    assert job(stack, job_id)["status"] == "expired"
    assert chat_calls(stack) == [] and stack.run(lambda: stack.app.scheduler.total_running) == 0


def test_ttl_from_completion_and_retention_bound(stack_factory):
    stack = stack_factory({"jobs": {"resultTtlSeconds": 100, "maxRetainedJobs": 3}})
    jobs = stack.app.jobs
    offset = [0.0]
    real = jobs.clock
    stack.run(lambda: setattr(jobs, "clock", lambda: real() + offset[0]))
    ids = []
    for _ in range(3):
        ids.append(submit(stack).json()["id"])
        wait_for(status_is(stack, ids[-1], "succeeded"))
        offset[0] += 10
    offset[0] += 75  # the first finished 105 s ago, the others 95 and 85: only the first is past its TTL
    stack.run(jobs.cleanup)
    assert [job(stack, i)["status"] for i in ids] == ["expired", "succeeded", "succeeded"]
    expired = job(stack, ids[0])
    assert expired["result_json"] is None and expired["finished_at"]
    ids.append(submit(stack).json()["id"])
    wait_for(status_is(stack, ids[-1], "succeeded"))
    # Four jobs, three retained: the expired one goes first.
    assert stack.request("GET", f"/v1/jobs/{ids[0]}").status == 404
    ids.append(submit(stack).json()["id"])
    wait_for(status_is(stack, ids[-1], "succeeded"))
    assert stack.request("GET", f"/v1/jobs/{ids[1]}").status == 404  # then the oldest finished one
    assert stack.run(jobs.summary)["succeededRetained"] == 3 and len(jobs.jobs) == 3


def test_list_holds_the_50_newest_first(stack_factory):
    stack = stack_factory({"queue": {"globalMaxQueued": 100, "perUserMaxQueued": 100}})
    jobs = stack.app.jobs
    slot = hold(stack, QWEN)
    ids = stack.run(lambda: [jobs.submit({"messages": [{"role": "user", "content": str(i)}]}, QWEN, "code_generate",
                                         "low", None)[0].id for i in range(55)])
    listed = [j["id"] for j in stack.request("GET", "/v1/jobs").json()["jobs"]]
    assert listed == ids[::-1][:50]
    for i in ids:
        stack.request("DELETE", f"/v1/jobs/{i}")
    release(stack, slot)
    assert stack.run(lambda: (stack.app.scheduler.total_waiting, stack.app.scheduler.total_running)) == (0, 0)


def test_queue_limits_answer_429_in_the_openai_shape(stack_factory):
    stack = stack_factory({"queue": {"globalMaxQueued": 2}})
    slot = hold(stack, QWEN)
    submit(stack, CODE)
    submit(stack, CODE)
    r = stack.request("POST", "/v1/chat/completions", chat_body(CODE, mode="async", preferredModels=[QWEN]))
    assert r.status == 429 and r.headers["retry-after"] == "1"
    assert r.json() == {"error": {"message": "Global queue limit exceeded: 2", "type": "rate_limit_error",
                                  "code": "global_queue_full"}}
    for j in stack.request("GET", "/v1/jobs").json()["jobs"]:
        stack.request("DELETE", f"/v1/jobs/{j['id']}")
    release(stack, slot)


def test_per_user_queue_limit_counts_the_client(stack_factory):
    stack = stack_factory({"queue": {"perUserMaxQueued": 1}})
    slot = hold(stack, QWEN)
    first = submit(stack, CODE).json()["id"]
    r = stack.request("POST", "/v1/chat/completions", chat_body(CODE, mode="async", preferredModels=[QWEN]))
    assert r.status == 429 and r.json()["error"]["code"] == "user_queue_full"
    assert stack.run(lambda: dict(stack.app.scheduler.user_waiting)) == {"ip:127.0.0.1": 1}
    stack.request("DELETE", f"/v1/jobs/{first}")
    release(stack, slot)


def test_priority_order_and_aging_at_the_simulator(stack_factory):
    stack = stack_factory({"queue": {"agingMs": 1000}})
    sched, jobs = stack.app.scheduler, stack.app.jobs
    offset = [0.0]
    real = sched.clock
    stack.run(lambda: setattr(sched, "clock", lambda: real() + offset[0]))

    def submit_many(priorities):
        return stack.run(lambda: [jobs.submit({"messages": [{"role": "user", "content": p}]}, QWEN, "code_generate",
                                              p, None)[0].id for p in priorities])

    def run_all(ids):
        release(stack, slot)
        wait_for(lambda: stack.run(lambda: all(jobs.jobs[i].status == "succeeded" for i in ids)))
        return [c["body"]["messages"][0]["content"] for c in chat_calls(stack, QWEN)[-len(ids):]]

    slot = hold(stack, QWEN)
    ids = submit_many(["low", "normal", "high", "normal"])
    assert run_all(ids) == ["high", "normal", "normal", "low"]
    slot = hold(stack, QWEN)
    ids = submit_many(["low"])
    offset[0] += 2.5  # two aging steps: the low job now ranks as high, and it is older
    ids += submit_many(["high", "normal"])
    assert run_all(ids) == ["low", "high", "normal"]
