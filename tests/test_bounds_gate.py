"""DNS rebinding (issue 15, item 7): a router on a loopback address answers only local Host names."""

from __future__ import annotations

import socket

import pytest
from conftest import chat_body

from ollama_agent_router.api.gate import HostRule

REBOUND = "rebind.attacker.example"


def test_a_rebound_name_cannot_read_another_callers_job(stack):
    job_id = stack.request("POST", "/v1/chat/completions", chat_body("secret prompt", mode="async")).json()["id"]
    for method, path in (("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{job_id}"), ("POST", "/v1/chat/completions"),
                         ("OPTIONS", "/v1/jobs"), ("GET", "/health")):
        r = stack.request(method, path, chat_body("hi") if method == "POST" else None, headers={"host": REBOUND})
        assert r.status == 403 and r.json()["error"]["code"] == "host_not_allowed", (method, path, r)
        assert b"secret prompt" not in r.body
    assert stack.request("GET", "/v1/jobs", headers={"host": f"localhost:{stack.port}"}).status == 200


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:11435", "app.localhost", "localhost.", "127.0.0.1",
                                  "127.0.0.2:80", "[::1]:11435", "[::ffff:127.0.0.1]", socket.gethostname(),
                                  "router.internal", "ROUTER.internal:8080"])
def test_local_names_and_allowed_hosts_pass(host):
    assert HostRule.for_listener("127.0.0.1", ("router.internal",)).allows(host)


@pytest.mark.parametrize("host", [REBOUND, "x", "localhost.attacker.example", "10.0.0.1", "[::2]", "0.0.0.0",
                                  "attacker.example:11435", "127.0.0.1.nip.io"])
def test_other_names_are_refused(host):
    assert not HostRule.for_listener("127.0.0.1", ("router.internal",)).allows(host)


def test_no_host_passes_and_a_public_listener_does_not_check():
    assert HostRule.for_listener("::1", ()).allows(None)
    assert HostRule.for_listener("localhost", ()) is not None
    assert HostRule.for_listener("0.0.0.0", ()) is None and HostRule.for_listener("192.168.1.5", ()) is None


def test_allowed_hosts_come_from_the_config(stack_factory):
    stack = stack_factory({"server": {"allowedHosts": ["Router.Internal"]}})
    assert stack.request("GET", "/health", headers={"host": "router.internal:11435"}).status == 200
    assert stack.request("GET", "/health", headers={"host": REBOUND}).status == 403
