"""The admin plane over real HTTP: gate order, endpoints and codes, versions, persistence, audit."""

from __future__ import annotations

import copy
import json
import threading
import time

import pytest
import yaml
from access_support import (
    ADMIN_KEY,
    KEYS,
    LOCKED,
    OTHER_ADMIN_KEY,
    access,
    admin_headers,
    api_key,
    bearer,
    plane,
    request,
    secret,
)
from conftest import chat_body

from ollama_agent_router.access.control import AccessControl
from ollama_agent_router.config import parse as cfgmod

CONFIG = "/v1/admin/access/config"
KEYS_PATH = "/v1/admin/access/keys"


def admin_stack(stack_factory, tmp_path, admin=None, **policy):
    policy.setdefault("standalone", LOCKED)
    policy.setdefault("keys", [api_key("std", ["standalone"])])
    override = access(path=str(tmp_path / "access.yaml"), admin=admin or {}, **policy)
    override["access"]["admin"]["auditLogPath"] = str(tmp_path / "audit.jsonl")
    return stack_factory(override)


def chat(stack, key):
    return stack.request("POST", "/v1/chat/completions", chat_body("Hello there"), bearer(key))


def msg(reply) -> str:
    return reply.json()["error"]["message"]


def audit_lines(tmp_path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def full_policy(stack) -> dict:
    body = stack.request("GET", CONFIG, headers=admin_headers()).json()
    return {k: body[k] for k in ("planes", "apiKeys")}


def test_get_config_masks_hashes_and_sends_an_etag(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    reply = stack.request("GET", CONFIG, headers=admin_headers())
    assert reply.status == 200 and reply.headers["etag"] == '"1"'
    body = reply.json()
    assert body["version"] == 1 and body["planes"]["standalone"]["auth"]["requireApiKey"] is True
    assert body["apiKeys"] == [{"id": "std", "keyHash": "sha256:********", "enabled": True, "scopes": ["standalone"]}]
    assert KEYS["std"][1] not in reply.body.decode()


def test_put_replaces_the_policy_and_persists_it(stack_factory, tmp_path):
    """Spec A.14 #8."""
    stack = admin_stack(stack_factory, tmp_path)
    policy = full_policy(stack)
    policy["planes"]["standalone"]["enabled"] = False
    reply = stack.request("PUT", CONFIG, {"expectedVersion": 1, "config": policy}, admin_headers())
    assert reply.status == 200, reply
    body = reply.json()
    assert body["version"] == 2 and body["updatedAt"].endswith("Z") and list(body)[-1] == "updatedAt"
    text = (tmp_path / "access.yaml").read_text()
    assert "version: 2" in text and KEYS["std"][1] in text  # the masked hash kept the stored one
    reloaded = cfgmod.parse_managed_access(yaml.safe_load(text))
    assert reloaded.planes["standalone"].enabled is False and reloaded.api_keys[0].key_hash == KEYS["std"][1]
    assert chat(stack, secret("std")).status == 404  # in force on the next request


def test_partial_put_is_400_and_changes_nothing(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    before = (tmp_path / "access.yaml").read_text()
    for config in ({"planes": {"standalone": {"enabled": False}}},
                   {"planes": {"standalone": LOCKED, "runtimeAgent": LOCKED}},  # no apiKeys: would wipe them
                   {"planes": {"standalone": {"enabled": True}, "runtimeAgent": LOCKED}, "apiKeys": []}):
        reply = stack.request("PUT", CONFIG, {"config": config}, admin_headers())
        assert reply.status == 400 and reply.json()["error"]["code"] == "incomplete_config", reply
    assert "config.planes.runtimeAgent" in msg(reply) or "config.planes.standalone.auth" in msg(reply)
    missing = stack.request("PUT", CONFIG, {"expectedVersion": 1}, admin_headers())
    assert missing.status == 400 and "config" in msg(missing)
    invalid = stack.request("PUT", CONFIG, {"config": {"planes": {"standalone": LOCKED, "runtimeAgent": LOCKED},
                                                       "apiKeys": [{"id": "x", "keyHash": "nope", "scopes": []}]}},
                            admin_headers())
    assert invalid.status == 400 and "keyHash must use sha256:<64 hex chars>" in msg(invalid)
    assert invalid.json()["error"]["details"]
    assert (tmp_path / "access.yaml").read_text() == before
    assert chat(stack, secret("std")).status == 200


def test_version_conflicts_with_expected_version_and_if_match(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    policy = full_policy(stack)
    stale = stack.request("PUT", CONFIG, {"expectedVersion": 99, "config": policy}, admin_headers())
    assert stale.status == 409 and msg(stale) == "Access config version mismatch: expected 99, current 1"
    stale = stack.request("PUT", CONFIG, {"config": policy}, admin_headers(**{"if-match": '"3"'}))
    assert stale.status == 409 and msg(stale) == "Access config version mismatch: expected 3, current 1"
    ok = stack.request("PUT", CONFIG, {"config": policy}, admin_headers(**{"if-match": '"1"'}))
    assert ok.status == 200 and ok.headers["etag"] == '"2"'
    assert stack.request("PUT", CONFIG, {"config": policy}, admin_headers(**{"if-match": "*"})).status == 200
    bad = stack.request("PUT", CONFIG, {"config": policy}, admin_headers(**{"if-match": '"v1"'}))
    assert bad.status == 400


def test_original_version_sequence(stack_factory, tmp_path):
    """Spec A.8: v1 -> POST (v2) -> DELETE (v3) -> stale PUT 409 -> PUT v4."""
    stack = admin_stack(stack_factory, tmp_path)
    assert stack.request("POST", KEYS_PATH, api_key("rt", ["runtimeAgent"]), admin_headers()).status == 201
    assert stack.request("DELETE", f"{KEYS_PATH}/rt", headers=admin_headers()).status == 200
    policy = full_policy(stack)
    assert stack.request("PUT", CONFIG, {"expectedVersion": 1, "config": policy}, admin_headers()).status == 409
    assert stack.request("PUT", CONFIG, {"expectedVersion": 3, "config": policy}, admin_headers()).json()["version"] == 4


def test_add_key_takes_effect_immediately(stack_factory, tmp_path):
    """Spec A.14 #10 and #11."""
    stack = admin_stack(stack_factory, tmp_path)
    assert chat(stack, secret("std2")).status == 401
    body = api_key("std2", ["standalone"], extra=1)
    reply = stack.request("POST", KEYS_PATH, body, admin_headers())
    assert reply.status == 201 and reply.headers["etag"] == '"2"'
    assert reply.json() == {"id": "std2", "keyHash": "sha256:********", "enabled": True, "scopes": ["standalone"]}
    assert chat(stack, secret("std2")).status == 200
    dup = stack.request("POST", KEYS_PATH, api_key("std2", ["standalone"]), admin_headers())
    assert dup.status == 409 and msg(dup) == "API key with id 'std2' already exists"
    same_hash = stack.request("POST", KEYS_PATH, dict(api_key("std2", ["standalone"]), id="copy"), admin_headers())
    assert same_hash.status == 409
    bad = stack.request("POST", KEYS_PATH, {"id": "new1", "keyHash": "not-a-valid-hash", "scopes": ["standalone"]},
                        admin_headers())
    assert bad.status == 400 and "keyHash must use" in msg(bad)
    bad_id = stack.request("POST", KEYS_PATH, {"id": "a b", "keyHash": KEYS["rt"][1], "scopes": ["standalone"]},
                           admin_headers())
    assert "api key id may contain only letters, numbers, dots, underscores, colons, and dashes" in msg(bad_id)


def test_revoke_key(stack_factory, tmp_path):
    """Spec A.14 #12."""
    stack = admin_stack(stack_factory, tmp_path)
    assert chat(stack, secret("std")).status == 200
    reply = stack.request("DELETE", f"{KEYS_PATH}/std", headers=admin_headers())
    assert reply.status == 200 and reply.json()["revoked"]["id"] == "std"
    assert reply.json()["revoked"]["keyHash"] == "sha256:********"
    assert chat(stack, secret("std")).status == 401
    missing = stack.request("DELETE", f"{KEYS_PATH}/nope", headers=admin_headers())
    assert missing.status == 404 and msg(missing) == "API key 'nope' not found"


def test_list_and_patch_keys(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    listing = stack.request("GET", KEYS_PATH, headers=admin_headers()).json()
    assert listing == {"version": 1, "apiKeys": [
        {"id": "std", "keyHash": "sha256:********", "enabled": True, "scopes": ["standalone"]}]}
    assert chat(stack, secret("std")).status == 200
    used = stack.request("GET", KEYS_PATH, headers=admin_headers()).json()["apiKeys"][0]["lastUsedAt"]
    assert used.endswith("Z") and used[:10] == time.strftime("%Y-%m-%d", time.gmtime())
    off = stack.request("PATCH", f"{KEYS_PATH}/std", {"enabled": False}, admin_headers())
    assert off.status == 200 and off.json()["enabled"] is False
    assert chat(stack, secret("std")).status == 401
    on = stack.request("PATCH", f"{KEYS_PATH}/std", {"enabled": True, "name": "Std client",
                                                     "limits": {"standalone": {"requests": 1, "windowSeconds": 60}}},
                       admin_headers())
    assert on.status == 200 and on.json()["limits"] == {"standalone": {"requests": 1, "windowSeconds": 60}}
    assert [chat(stack, secret("std")).status for _ in range(2)] == [200, 429]
    cleared = stack.request("PATCH", f"{KEYS_PATH}/std", {"limits": None}, admin_headers()).json()
    assert "limits" not in cleared and chat(stack, secret("std")).status == 200
    for body in ({"keyHash": KEYS["rt"][1]}, {"id": "other"}, {"enabled": None}):
        assert stack.request("PATCH", f"{KEYS_PATH}/std", body, admin_headers()).status == 400
    assert stack.request("PATCH", f"{KEYS_PATH}/std", {"scopes": ["bogus"]}, admin_headers()).status == 400
    assert stack.request("PATCH", f"{KEYS_PATH}/nope", {"enabled": True}, admin_headers()).status == 404
    assert (tmp_path / "access.yaml").read_text().count("version: 4") == 1


def test_admin_changes_reset_only_the_buckets_of_touched_keys(stack_factory, tmp_path):
    one = {"standalone": {"requests": 1, "windowSeconds": 60}}
    stack = admin_stack(stack_factory, tmp_path, keys=[api_key("std", ["standalone"], limits=one),
                                                       api_key("std2", ["standalone"], limits=one)])
    for key in ("std", "std2"):
        assert [chat(stack, secret(key)).status for _ in range(2)] == [200, 429]
    assert stack.request("PATCH", f"{KEYS_PATH}/std", {"name": "renamed"}, admin_headers()).status == 200
    assert chat(stack, secret("std")).status == 200
    assert chat(stack, secret("std2")).status == 429
    assert stack.request("POST", KEYS_PATH, api_key("extra", ["standalone"]), admin_headers()).status == 201
    assert chat(stack, secret("std2")).status == 429
    policy = full_policy(stack)
    policy["planes"]["runtimeAgent"]["enabled"] = False
    assert stack.request("PUT", CONFIG, {"config": policy}, admin_headers()).status == 200
    assert chat(stack, secret("std2")).status == 429


def test_gate_order_and_messages(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path, admin={"allowedIps": ["10.1.1.1"]})
    denied = stack.request("GET", CONFIG, headers=admin_headers())
    assert denied.status == 403 and msg(denied) == "Admin plane access denied"
    stack2 = admin_stack(stack_factory, tmp_path / "b")
    for headers in ({}, bearer("wrong"), {"authorization": "Basic eDp5"}):
        reply = stack2.request("GET", CONFIG, headers=headers)
        assert reply.status == 401 and msg(reply) == "Admin authentication required"
    assert stack2.request("GET", CONFIG, headers=admin_headers(OTHER_ADMIN_KEY)).status == 200
    assert stack2.request("GET", CONFIG, headers={"x-api-key": ADMIN_KEY}).status == 200
    assert stack2.request("GET", CONFIG, headers=bearer(secret("std"))).status == 401  # a public key is no admin key


def test_forwarded_for_cannot_spoof_the_allowlist(stack_factory, tmp_path):
    # Not behind a proxy: X-Forwarded-For is ignored, whatever it says.
    direct = admin_stack(stack_factory, tmp_path, admin={"allowedIps": ["203.0.113.7"]})
    assert direct.request("GET", CONFIG, headers=admin_headers(**{"x-forwarded-for": "203.0.113.7"})).status == 403
    # Behind a trusted proxy on loopback: only the right-most entry (the one the proxy saw) counts.
    proxied = admin_stack(stack_factory, tmp_path / "p", admin={"allowedIps": ["203.0.113.7"],
                                                                 "trustedProxies": ["127.0.0.1"]})
    ok = admin_headers(**{"x-forwarded-for": "203.0.113.7"})
    assert proxied.request("GET", CONFIG, headers=ok).status == 200
    for spoof in ("203.0.113.7, 198.51.100.1", "203.0.113.7,garbage", "127.0.0.1"):
        reply = proxied.request("GET", CONFIG, headers=admin_headers(**{"x-forwarded-for": spoof}))
        assert reply.status == 403, spoof
    assert proxied.request("GET", CONFIG, headers=admin_headers()).status == 403  # the proxy itself is not allowed


@pytest.mark.parametrize("allowed,expected", [
    (["::1"], 200), (["0:0:0:0:0:0:0:1"], 200), (["::/0"], 200), (["::1/128"], 200),
    (["127.0.0.1"], 403), (["fd00::/8"], 403),
])
def test_ipv6_allowlists(stack_factory, tmp_path, allowed, expected):
    stack = admin_stack(stack_factory, tmp_path, admin={"allowedIps": allowed})
    port = stack.call(stack.app.server.listen("::1", 0))
    assert request(port, "GET", CONFIG, headers=admin_headers(), host="::1").status == expected


def test_mapped_ipv4_allowlist_entry_matches_a_plain_ipv4_client(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path, admin={"allowedIps": ["::ffff:127.0.0.1"]})
    assert stack.request("GET", CONFIG, headers=admin_headers()).status == 200


def test_admin_failures_are_limited_per_address(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    assert [stack.request("GET", CONFIG, headers=bearer(f"guess{i}")).status for i in range(10)] == [401] * 10
    blocked = stack.request("GET", CONFIG, headers=admin_headers())
    assert blocked.status == 429 and int(blocked.headers["retry-after"]) >= 1
    assert len([r for r in audit_lines(tmp_path) if r["outcome"] == "denied"]) == 10  # the flood is not audited


def test_concurrent_writers_exactly_one_wins(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    policy = full_policy(stack)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        body = copy.deepcopy(policy)
        body["planes"]["runtimeAgent"]["defaultLimit"] = {"requests": 10 + i, "windowSeconds": 60}
        barrier.wait()
        results.append(stack.request("PUT", CONFIG, {"expectedVersion": 1, "config": body}, admin_headers()).status)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [200] + [409] * 7
    assert cfgmod.parse_managed_access(yaml.safe_load((tmp_path / "access.yaml").read_text())).version == 2


def test_external_edit_is_detected_until_reloaded(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    path = tmp_path / "access.yaml"
    edited = yaml.safe_load(path.read_text())
    edited["apiKeys"].append(api_key("std2", ["standalone"]))
    path.write_text(yaml.safe_dump(edited))
    assert chat(stack, secret("std2")).status == 401  # not in force before a reload
    reply = stack.request("POST", KEYS_PATH, api_key("extra", ["standalone"]), admin_headers())
    assert reply.status == 409 and reply.json()["error"]["code"] == "managed_file_changed"
    assert "std2" in path.read_text()  # the operator's edit was not overwritten
    stack.run(stack.app.reload_access)
    assert chat(stack, secret("std2")).status == 200
    assert stack.request("POST", KEYS_PATH, api_key("extra", ["standalone"]), admin_headers()).status == 201
    assert {k["id"] for k in yaml.safe_load(path.read_text())["apiKeys"]} == {"std", "std2", "extra"}


def test_broken_file_on_reload_keeps_the_current_policy(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    (tmp_path / "access.yaml").write_text("version: [\n")
    stack.run(stack.app.reload_access)
    assert any("access_reload_failed" in line for line in stack.log_lines)
    assert chat(stack, secret("std")).status == 200


def test_unknown_key_on_reload_is_a_warning_and_the_file_is_used(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    path = tmp_path / "access.yaml"
    edited = yaml.safe_load(path.read_text())
    edited["apiKeys"].append({**api_key("std2", ["standalone"]), "scoeps": ["runtimeAgent"]})
    path.write_text(yaml.safe_dump(edited))
    stack.run(stack.app.reload_access)
    assert chat(stack, secret("std2")).status == 200
    (warning,) = [json.loads(line) for line in stack.log_lines if "config_warning" in line]
    assert warning["level"] == "warning" and warning["message"].startswith(f"{path}:")
    assert warning["message"].endswith(": apiKeys[1].scoeps: unknown key (did you mean 'scopes'?)")


def test_changes_survive_a_restart(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    assert stack.request("POST", KEYS_PATH, api_key("std2", ["standalone"]), admin_headers()).status == 201
    again = AccessControl(stack.cfg)
    assert again.policy.version == 2 and [k.id for k in again.policy.api_keys] == ["std", "std2"]


def test_audit_records_mutations_and_denials(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    stack.request("POST", KEYS_PATH, api_key("std2", ["standalone"]), admin_headers(**{"x-request-id": "req-42"}))
    stack.request("DELETE", f"{KEYS_PATH}/missing", headers=admin_headers())
    stack.request("GET", CONFIG, headers=bearer("wrong-admin-key"))
    records = audit_lines(tmp_path)
    added, failed, denied = records
    assert added["event"] == "audit" and added["action"] == "key.add" and added["outcome"] == "success"
    assert added["reason"] == "key_added" and added["target"] == "std2" and added["requestId"] == "req-42"
    assert added["principal"] == "ops" and added["clientIp"] == "127.0.0.1"
    assert (added["oldVersion"], added["newVersion"]) == (1, 2) and added["ts"].endswith("Z")
    assert failed["outcome"] == "failure" and failed["reason"] == "key_not_found" and failed["target"] == "missing"
    assert denied["outcome"] == "denied" and denied["reason"] == "invalid_admin_key" and "principal" not in denied
    assert all(None not in r.values() for r in records)
    logged = [json.loads(line) for line in stack.log_lines if '"event":"audit"' in line]
    assert [r["reason"] for r in logged] == ["key_added", "key_not_found", "invalid_admin_key"]
    assert logged[2]["outcome"] == "denied"
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600


def test_second_admin_key_is_named_by_position(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    stack.request("GET", CONFIG, headers=admin_headers(OTHER_ADMIN_KEY))
    assert audit_lines(tmp_path)[-1]["principal"] == "admin-key-2"


def test_put_keeps_anonymous_planes_explicit(stack_factory, tmp_path):
    stack = admin_stack(stack_factory, tmp_path)
    policy = full_policy(stack)
    policy["planes"]["standalone"] = plane(anonymous="limited", limit=(5, 60))
    assert stack.request("PUT", CONFIG, {"config": policy}, admin_headers()).status == 200
    anon = stack.request("POST", "/v1/chat/completions", chat_body("Hello there"))
    assert anon.status == 200 and anon.headers["x-ratelimit-limit"] == "5"
