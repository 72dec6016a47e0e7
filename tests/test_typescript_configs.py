"""The TypeScript router's reference configs run here unchanged (with real key hashes in place of its
placeholders): ``validate-config`` accepts them, and ``serve`` starts on them and answers."""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

from test_cli import Served, run_cli

from ollama_agent_router.access.keys import generate_key

CONFIGS = Path(__file__).resolve().parent / "data" / "typescript"


def request(port: int, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    reply = conn.getresponse()
    data = json.loads(reply.read() or b"{}")
    conn.close()
    return reply.status, data


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Write a Python function that merges two lists"}]}


def test_the_open_example_validates_and_serves(tmp_path):
    config = tmp_path / "gex44.yaml"
    config.write_text((CONFIGS / "gex44.yaml").read_text())
    check = run_cli("validate-config", "-c", str(config))
    assert check.returncode == 0 and "Config is valid" in check.stdout
    # Its purposes beyond the task types are warnings, not errors: the original accepted them.
    assert "'classification'" in check.stderr and "'second_opinion'" in check.stderr
    served = Served([sys.executable, "-m", "ollama_agent_router", "serve", "-c", str(config), "--simulate",
                     "--port", "0"], cwd=tmp_path)
    try:
        status, reply = request(served.port, "POST", "/v1/chat/completions", CHAT)
        assert status == 200 and reply["router"]["selectedModel"] == "qwen2.5-coder:7b"
    finally:
        assert served.stop() == 0


def test_the_secured_example_with_real_hashes_validates_and_serves(tmp_path):
    client_key, client_hash = generate_key()
    admin_key, admin_hash = generate_key()
    text = (CONFIGS / "gex44-secured.yaml").read_text()
    text = text.replace("sha256:replace-with-the-hash-of-your-client-key", client_hash)
    text = text.replace("sha256:replace-with-the-hash-of-your-admin-key", admin_hash)
    config = tmp_path / "gex44-secured.yaml"
    config.write_text(text)
    assert run_cli("validate-config", "-c", str(config)).returncode == 0
    served = Served([sys.executable, "-m", "ollama_agent_router", "serve", "-c", str(config), "--simulate",
                     "--port", "0"], cwd=tmp_path)
    try:
        assert request(served.port, "POST", "/v1/chat/completions", CHAT)[0] == 401
        assert request(served.port, "POST", "/v1/chat/completions", CHAT, client_key)[0] == 200
        assert request(served.port, "GET", "/v1/router/status", key=client_key)[0] == 404  # runtimeAgent is off
        status, policy = request(served.port, "GET", "/v1/admin/access/config", key=admin_key)
        assert status == 200 and policy["apiKeys"][0]["id"] == "gex44-default-client"
        assert (tmp_path / "access-managed.yaml").exists()  # bootstrapped next to the config, as the original did
    finally:
        assert served.stop() == 0
    assert client_key not in served.output.decode() and admin_key not in served.output.decode()
