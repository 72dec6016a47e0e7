"""The public planes over real HTTP: keys, scopes, anonymous modes, job ownership, rate limits, denials."""

from __future__ import annotations

import json
import socket
import time

from access_support import LOCKED, access, api_key, bearer, plane, secret
from conftest import chat_body

from ollama_agent_router.access.keys import hash_key

CHAT = "/v1/chat/completions"
STATUS = "/v1/router/status"


def chat(stack, headers=None, **router):
    return stack.request("POST", CHAT, chat_body("Hello there", **router), headers)


def test_without_access_section_everything_is_open_and_sdk_keys_are_ignored(stack):
    reply = stack.openai(api_key="sk-none").chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Hello there"}])
    assert reply.choices[0].message.content
    assert chat(stack, {"authorization": "Basic Zm9vOmJhcg=="}).status == 200
    assert stack.request("GET", STATUS, headers=bearer("ollama")).status == 200
    assert "x-ratelimit-limit" not in chat(stack).headers
    admin = stack.request("GET", "/v1/admin/access/config", headers=bearer("whatever"))
    unknown = stack.request("GET", "/v1/nothing-here")
    assert admin.status == unknown.status == 404
    assert admin.body == unknown.body and admin.headers["content-type"] == unknown.headers["content-type"]


def test_keys_and_scopes_per_plane(stack_factory):
    """Spec A.14 #5, with the original's exact messages."""
    stack = stack_factory(access(standalone=LOCKED, runtime=LOCKED,
                                 keys=[api_key("std", ["standalone"]), api_key("rt", ["runtimeAgent"])]))
    no_key = chat(stack)
    assert no_key.status == 401 and no_key.json()["error"]["message"] == "API key required"
    assert "www-authenticate" not in no_key.headers
    wrong_plane = chat(stack, bearer(secret("rt")))
    assert wrong_plane.status == 403
    assert wrong_plane.json()["error"]["message"] == "API key is not allowed for this plane"
    assert chat(stack, bearer(secret("std"))).status == 200
    assert chat(stack, {"x-api-key": secret("std")}).status == 200
    assert chat(stack, {"authorization": f"bearer    {secret('std')}  "}).status == 200
    assert stack.request("GET", STATUS, headers=bearer(secret("rt"))).status == 200
    assert stack.request("GET", STATUS, headers=bearer(secret("std"))).status == 403


def test_unknown_or_unusable_credentials_are_401_even_where_anonymous_is_allowed(stack_factory):
    stack = stack_factory(access(keys=[api_key("std", ["standalone"])]))
    assert chat(stack).status == 200  # anonymous is allowed...
    for headers in (bearer("sk-none"), {"authorization": "Basic Zm9vOmJhcg=="}, {"authorization": "Bearer"},
                    {"authorization": "token-without-scheme"}, {"x-api-key": "   "}):
        reply = chat(stack, headers)
        assert reply.status == 401 and reply.json()["error"]["message"] == "Invalid API key", headers
    assert chat(stack, bearer(secret("std"))).status == 200


def test_with_no_keys_configured_presented_keys_are_ignored(stack_factory):
    stack = stack_factory(access(standalone=plane(limit=(100, 60))))
    assert chat(stack, bearer("sk-none")).status == 200


def test_plane_disabled_is_a_plain_404(stack_factory):
    """Spec A.14 #6."""
    stack = stack_factory(access(runtime=plane(enabled=False)))
    assert chat(stack).status == 200
    status = stack.request("GET", STATUS)
    assert status.status == 404 and status.body == stack.request("GET", "/v1/nowhere").body


def test_disabled_and_expired_keys(stack_factory):
    past = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 60))
    future = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 3600))
    stack = stack_factory(access(standalone=LOCKED, keys=[
        api_key("std", ["standalone"], enabled=False), api_key("std2", ["standalone"], expiresAt=past),
        api_key("both", ["standalone"], expiresAt=future)]))
    assert chat(stack, bearer(secret("std"))).status == 401
    assert chat(stack, bearer(secret("std2"))).status == 401
    assert chat(stack, bearer(secret("both"))).status == 200


def test_salted_keys_for_human_passwords(stack_factory):
    password = "correct horse battery staple"
    salt = "00112233445566778899aabbccddeeff"
    import hashlib

    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), bytes.fromhex(salt), 1000).hex()
    stack = stack_factory(access(standalone=LOCKED, keys=[
        {"id": "human", "keyHash": f"pbkdf2-sha256:1000:{salt}:{digest}", "scopes": ["standalone"]},
        {"id": "human2", "keyHash": hash_key("another long passphrase", "scrypt"), "scopes": ["standalone"]},
    ]))
    assert chat(stack, bearer(password)).status == 200
    assert chat(stack, bearer("another long passphrase")).status == 200
    assert chat(stack, bearer("correct horse battery stapler")).status == 401


def test_key_limit_429_with_the_original_headers(stack_factory):
    """Spec A.14 #7 and A.7's headers."""
    stack = stack_factory(access(standalone=LOCKED, keys=[
        api_key("std", ["standalone"], limits={"standalone": {"requests": 1, "windowSeconds": 60}})]))
    first = chat(stack, bearer(secret("std")))
    assert first.status == 200
    assert first.headers["x-ratelimit-limit"] == "1" and first.headers["x-ratelimit-remaining"] == "0"
    assert abs(int(first.headers["x-ratelimit-reset"]) - (time.time() + 60)) <= 2
    assert "retry-after" not in first.headers
    second = chat(stack, bearer(secret("std")))
    assert second.status == 429 and second.json()["error"]["message"] == "Rate limit exceeded"
    assert second.headers["x-ratelimit-remaining"] == "0" and 55 <= int(second.headers["retry-after"]) <= 60


def test_rate_limit_headers_reach_handler_errors(stack_factory):
    stack = stack_factory(access(standalone=plane(limit=(50, 60))))
    bad = stack.request("POST", CHAT, raw=b"{not json")
    assert bad.status == 400 and bad.headers["x-ratelimit-limit"] == "50"
    assert bad.headers["x-ratelimit-remaining"] == "49"


def test_anonymous_limited_is_per_client_address(stack_factory):
    override = access(standalone=plane(anonymous="limited", limit=(2, 60)))
    override["access"]["admin"] = {"trustedProxies": ["127.0.0.1"]}
    stack = stack_factory(override)

    def from_ip(ip):
        return chat(stack, {"x-forwarded-for": ip}).status

    assert [from_ip("198.51.100.1") for _ in range(3)] == [200, 200, 429]
    assert from_ip("198.51.100.2") == 200  # another client has its own bucket
    assert from_ip("198.51.100.1, 198.51.100.3") == 200  # the proxy vouches for the right-most entry only
    assert from_ip("198.51.100.3, 198.51.100.1") == 429  # spoofed left-most entries do not buy a new bucket


def test_forwarded_for_from_an_untrusted_peer_is_ignored(stack_factory):
    override = access(standalone=plane(anonymous="limited", limit=(1, 60)))
    override["access"]["admin"] = {"trustedProxies": ["10.9.9.9"]}
    stack = stack_factory(override)
    assert chat(stack, {"x-forwarded-for": "198.51.100.1"}).status == 200
    assert chat(stack, {"x-forwarded-for": "198.51.100.2"}).status == 429


def test_failed_authentications_are_limited_per_address(stack_factory):
    stack = stack_factory(access(standalone=LOCKED, keys=[api_key("std", ["standalone"])]))
    statuses = [chat(stack, bearer(f"guess-{i}")).status for i in range(10)]
    assert statuses == [401] * 10
    blocked = chat(stack, bearer("guess-10"))
    assert blocked.status == 429 and blocked.json()["error"]["message"] == "Too many failed authentication attempts"
    assert int(blocked.headers["retry-after"]) >= 1
    assert chat(stack, bearer(secret("std"))).status == 429  # no key testing at all while blocked
    assert stack.request("GET", STATUS).status == 200  # anonymous use of an open plane goes on


def test_job_routes_take_the_most_restrictive_plane(stack_factory):
    """The original's verified leak: standalone locked, runtimeAgent open, jobs readable by anyone."""
    stack = stack_factory(access(standalone=LOCKED, keys=[api_key("std", ["standalone"])]))
    listing = stack.request("GET", "/v1/jobs")
    assert listing.status == 401 and listing.json()["error"]["message"] == "API key required"
    assert stack.request("GET", "/v1/jobs", headers=bearer(secret("std"))).status == 200
    # With standalone disabled the job routes still work through runtimeAgent alone.
    open_rt = stack_factory(access(standalone=plane(enabled=False)))
    assert open_rt.request("GET", "/v1/jobs").status == 200


def make_job(stack, key):
    reply = chat(stack, bearer(key), mode="async")
    assert reply.status == 202, reply
    return reply.json()["id"]


def test_jobs_are_owned_by_their_creator(stack_factory):
    stack = stack_factory(access(standalone=LOCKED, runtime=LOCKED, keys=[
        api_key("std", ["standalone"]), api_key("std2", ["standalone"]), api_key("rt", ["runtimeAgent"])]))
    mine, theirs = make_job(stack, secret("std")), make_job(stack, secret("std2"))
    as_std = bearer(secret("std"))
    assert [j["id"] for j in stack.request("GET", "/v1/jobs", headers=as_std).json()["jobs"]] == [mine]
    for method, path in (("GET", f"/v1/jobs/{theirs}"), ("GET", f"/v1/jobs/{theirs}/result"),
                         ("DELETE", f"/v1/jobs/{theirs}")):
        reply = stack.request(method, path, headers=as_std)
        assert reply.status == 404 and reply.json()["error"]["message"] == "Job not found"
    assert stack.request("GET", f"/v1/jobs/{mine}", headers=as_std).status == 200
    everything = stack.request("GET", "/v1/jobs", headers=bearer(secret("rt"))).json()["jobs"]
    assert {j["id"] for j in everything} == {mine, theirs}
    assert stack.request("GET", f"/v1/jobs/{theirs}/result", headers=bearer(secret("rt"))).status in (200, 202)
    assert stack.request("DELETE", f"/v1/jobs/{theirs}", headers=bearer(secret("std2"))).status == 200


def test_anonymous_jobs_belong_to_the_client_address(stack_factory):
    override = access()
    override["access"]["admin"] = {"trustedProxies": ["127.0.0.1"]}
    stack = stack_factory(override)
    reply = chat(stack, {"x-forwarded-for": "198.51.100.1"}, mode="async")
    job = reply.json()["id"]
    assert stack.request("GET", f"/v1/jobs/{job}", headers={"x-forwarded-for": "198.51.100.1"}).status == 200
    assert stack.request("GET", f"/v1/jobs/{job}", headers={"x-forwarded-for": "198.51.100.2"}).status == 404


def test_authentication_happens_before_the_body_is_read(stack_factory):
    stack = stack_factory(access(standalone=LOCKED, keys=[api_key("std", ["standalone"])])
                          | {"server": {"requestBodyLimit": "8mb"}})
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    try:
        # Headers only: the 8 MB body is never sent, so a server waiting for it would time out instead.
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 8388608\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            assert chunk, "connection closed without a response"
            data += chunk
        assert data.startswith(b"HTTP/1.1 401 ")
    finally:
        sock.close()


def test_denials_are_counted_and_logged_in_aggregate(stack_factory):
    stack = stack_factory(access(standalone=LOCKED, keys=[api_key("std", ["standalone"])]))
    for _ in range(25):
        assert chat(stack).status == 401
    metrics = stack.request("GET", "/metrics").body.decode()
    assert 'oar_auth_denials_total{plane="standalone",reason="api_key_required"} 25' in metrics
    denial_lines = [line for line in stack.log_lines if "plane_access_denied" in line]
    assert len(denial_lines) == 1
    assert json.loads(denial_lines[0])["reason"] == "api_key_required"
    stack.run(lambda: stack.app.access.denials._flush())
    summary = json.loads([line for line in stack.log_lines if "plane_access_denied_summary" in line][0])
    assert summary["denials"] == {"standalone/api_key_required": 24} and summary["total"] == 24


def test_rate_limited_requests_are_counted(stack_factory):
    stack = stack_factory(access(runtime=plane(limit=(1, 60))))
    assert [stack.request("GET", STATUS).status for _ in range(3)] == [200, 429, 429]
    assert 'oar_rate_limited_total{plane="runtimeAgent"} 2' in stack.request("GET", "/metrics").body.decode()


def test_metrics_can_require_a_runtime_key(stack_factory):
    stack = stack_factory(access(keys=[api_key("std", ["standalone"]), api_key("rt", ["runtimeAgent"])])
                          | {"metrics": {"requireApiKey": True}})
    assert stack.request("GET", "/metrics").status == 401
    assert stack.request("GET", "/metrics", headers=bearer(secret("std"))).status == 403
    assert stack.request("GET", "/metrics", headers=bearer(secret("rt"))).status == 200
    assert stack.request("GET", "/health").status == 200


def test_shared_routes_charge_the_first_scoped_plane(stack_factory):
    stack = stack_factory(access(standalone=LOCKED, runtime=LOCKED, keys=[
        api_key("both", ["standalone", "runtimeAgent"], limits={"standalone": {"requests": 1, "windowSeconds": 60}})]))
    headers = bearer(secret("both"))
    assert stack.request("GET", "/v1/jobs", headers=headers).status == 200
    assert stack.request("GET", "/v1/jobs", headers=headers).status == 429
    assert stack.request("GET", STATUS, headers=headers).status == 200  # runtimeAgent has no limit

