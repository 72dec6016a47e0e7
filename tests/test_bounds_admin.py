"""The admin plane fails closed and stays small (issue 15, items 9 and 16): a change whose audit line cannot
be written is not made, and a PUT is capped in bytes and in keys so it cannot hold the loop for seconds."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from access_support import LOCKED, access, admin_headers, api_key
from bounds_support import LoopWatch

from ollama_agent_router.access.keys import generate_key
from ollama_agent_router.api.admin import MAX_KEYS

CONFIG = "/v1/admin/access/config"
KEYS_PATH = "/v1/admin/access/keys"


def admin_stack(stack_factory, tmp_path, audit_path: str):
    override = access(standalone=LOCKED, keys=[api_key("std", ["standalone"])], path=str(tmp_path / "access.yaml"),
                      admin={"auditLogPath": audit_path})
    return stack_factory(override)


def new_key(key_id: str) -> dict:
    return {"id": key_id, "keyHash": generate_key()[1], "scopes": ["standalone"]}


def policy_with(keys: list[dict]) -> dict:
    plane = {"enabled": True, "auth": {"requireApiKey": True, "anonymous": "reject"}}
    return {"config": {"planes": {"standalone": plane, "runtimeAgent": plane}, "apiKeys": keys}}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_change_that_cannot_be_audited_is_not_made(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path, "/dev/full")  # every write fails with ENOSPC
    before = (tmp_path / "access.yaml").read_bytes()
    attempts = [("POST", KEYS_PATH, new_key("added")), ("DELETE", f"{KEYS_PATH}/std", None),
                ("PATCH", f"{KEYS_PATH}/std", {"enabled": False}), ("PUT", CONFIG, policy_with([new_key("only")]))]
    for method, path, body in attempts:
        r = stack.request(method, path, body, headers=admin_headers())
        assert r.status == 503 and r.json()["error"]["code"] == "audit_log_unavailable", (method, r)
    assert (tmp_path / "access.yaml").read_bytes() == before
    keys = stack.request("GET", KEYS_PATH, headers=admin_headers()).json()
    assert keys["version"] == 1 and [k["id"] for k in keys["apiKeys"]] == ["std"] and keys["apiKeys"][0]["enabled"]
    assert any("audit_write_failed" in line for line in stack.log_lines)


def test_an_audited_change_is_made_and_on_record(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path, str(tmp_path / "audit.jsonl"))
    assert stack.request("POST", KEYS_PATH, new_key("added"), headers=admin_headers()).status == 201
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(x["action"], x["outcome"], x["reason"], x.get("target"), x["oldVersion"], x["newVersion"])
            for x in lines] == [("key.add", "success", "key_added", "added", 1, 2)]


def test_a_huge_put_is_refused_at_once(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path, str(tmp_path / "audit.jsonl"))
    watch = LoopWatch()
    stack.call(watch.start())
    keys = [{"id": f"k{i}", "keyHash": "sha256:" + hashlib.sha256(str(i).encode()).hexdigest(),
             "scopes": ["standalone", "runtimeAgent"], "name": f"key number {i}"} for i in range(5_000)]  # 0.8 MB: under the server limit
    r = stack.request("PUT", CONFIG, policy_with(keys), headers=admin_headers())
    assert r.status == 413 and r.json()["error"]["code"] == "body_too_large", r
    r = stack.request("PUT", CONFIG, policy_with(keys[: MAX_KEYS + 1]), headers=admin_headers())
    assert r.status == 413 and r.json()["error"]["code"] == "too_many_keys", r
    r = stack.request("PUT", CONFIG, policy_with(keys[:MAX_KEYS]), headers=admin_headers())
    assert r.status == 200 and len(r.json()["apiKeys"]) == MAX_KEYS, r
    r = stack.request("POST", KEYS_PATH, new_key("one-more"), headers=admin_headers())
    assert r.status == 409 and r.json()["error"]["code"] == "too_many_keys", r
    worst = stack.call(watch.stop())
    assert worst < 0.5, f"the loop was held for {worst * 1000:.0f} ms"
