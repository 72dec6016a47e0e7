"""The real router process: kill -9 during admin writes, restarts, SIGHUP reloads, and secrets kept out of logs."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    request,
    secret,
)
from conftest import TEST_CONFIG, merge, wait_for

from ollama_agent_router.config import parse as cfgmod

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "/v1/admin/access/config"
KEYS_PATH = "/v1/admin/access/keys"


class Router:
    """``python -m ollama_agent_router serve`` in a subprocess, its output captured in files."""

    def __init__(self, tmp: Path, name: str = "router") -> None:
        self.cfg = tmp / "config.yaml"
        self.out = tmp / f"{name}.stdout"
        self.err = tmp / f"{name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> "Router":
        # Every start appends to the same files: wait for one more "listening" line than before.
        before = self._listening_lines()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        with open(self.out, "ab") as out, open(self.err, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ollama_agent_router", "serve", "-c", str(self.cfg), "--port", "0",
                 "--log-level", "debug"], stdout=out, stderr=err, env=env, cwd=str(ROOT))

        def listening() -> list[str] | None:
            assert self.proc is not None and self.proc.poll() is None, self.err.read_text()[-2000:]
            lines = self._listening_lines()
            return lines if len(lines) > len(before) else None

        self.port = json.loads(wait_for(listening, timeout=20, interval=0.02)[-1])["port"]
        return self

    def _listening_lines(self) -> list[str]:
        text = self.err.read_text() if self.err.exists() else ""
        return [line for line in text.splitlines() if '"event":"listening"' in line]

    def request(self, method: str, path: str, body=None, headers=None):
        return request(self.port, method, path, body, headers)

    def send(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.send(sig)
        self.proc.wait(15)

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()


def boot(tmp: Path, **policy) -> Router:
    policy.setdefault("standalone", LOCKED)
    policy.setdefault("keys", [api_key("std", ["standalone"]), api_key("rt", ["runtimeAgent"])])
    raw = merge(TEST_CONFIG, access(path="access.yaml", admin={}, **policy))
    raw = merge(raw, {"ollama": {"baseUrl": "http://127.0.0.1:9", "pollIntervalMs": 60000}})
    (tmp / "config.yaml").write_text(yaml.safe_dump(raw))
    return Router(tmp).start()


def assert_no_secrets(router: Router) -> None:
    output = router.output()
    assert output  # the run did log
    for secret_value in [k for k, _ in KEYS.values()] + [ADMIN_KEY, OTHER_ADMIN_KEY]:
        assert secret_value not in output


def managed(tmp: Path) -> dict:
    return yaml.safe_load((tmp / "access.yaml").read_text())


# ---- kill -9 during admin writes --------------------------------------------------------------------


def op_request(i: int) -> bytes:
    """Write number i: even ones add key k<i>, odd ones revoke the key the previous write added."""
    auth = f"Authorization: Bearer {ADMIN_KEY}\r\n"
    if i % 2 == 0:
        body = json.dumps({"id": f"k{i}", "keyHash": "sha256:" + f"{i:064x}", "scopes": ["standalone"]}).encode()
        return (f"POST {KEYS_PATH} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return f"DELETE {KEYS_PATH}/k{i - 1} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n".encode()


def keys_after(writes: int) -> list[str]:
    """The key ids in the file after ``writes`` writes have been applied."""
    extra = [f"k{writes - 1}"] if writes % 2 == 1 else []
    return ["std", "rt"] + extra


def read_statuses(sock: socket.socket, count: int) -> list[int]:
    buf, statuses = b"", []
    while len(statuses) < count:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(65536)
            assert chunk, "router closed the connection"
            buf += chunk
            continue
        head = buf[:end].decode("latin-1")
        length = int(next(line.split(":", 1)[1] for line in head.split("\r\n") if line.lower().startswith("content-length")))
        while len(buf) < end + 4 + length:
            buf += sock.recv(65536)
        statuses.append(int(head.split(" ", 2)[1]))
        buf = buf[end + 4 + length:]
    return statuses


def check_file(tmp: Path, acknowledged: int) -> int:
    """The file is valid YAML at some version reached by the write sequence, no older than acknowledged."""
    data = managed(tmp)
    policy = cfgmod.parse_managed_access(data)
    applied = policy.version - 1
    assert applied >= acknowledged  # an acknowledged write is durable
    assert [k.id for k in policy.api_keys] == keys_after(applied)
    return applied


def test_kill_9_during_200_admin_writes(tmp_path):
    rng = random.Random(20240611)
    router = boot(tmp_path)
    done = acknowledged = 0
    kills = 0
    while done < 200:
        batch = min(200 - done, rng.randint(30, 60))
        stop_after = rng.randrange(batch) if kills < 4 else batch
        sock = socket.create_connection(("127.0.0.1", router.port), timeout=20)
        sock.sendall(b"".join(op_request(i) for i in range(done, done + batch)))
        statuses = read_statuses(sock, stop_after)
        assert set(statuses) <= {200, 201}, statuses
        acknowledged = done + stop_after
        if stop_after < batch:
            # A random moment inside the writes that follow (the file is checked either way).
            time.sleep(rng.uniform(0, 0.01))
            router.kill(signal.SIGKILL)
            kills += 1
            sock.close()
            done = check_file(tmp_path, acknowledged)
            router = router.start()
        else:
            sock.close()
            done = check_file(tmp_path, acknowledged)
    assert kills == 4 and done == 200
    assert managed(tmp_path)["version"] == 201
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    router.kill(signal.SIGTERM)
    assert_no_secrets(router)


# ---- restart, SIGHUP, secrets ---------------------------------------------------------------------


def test_changes_survive_a_restart_and_secrets_never_reach_the_logs(tmp_path):
    router = boot(tmp_path)
    assert router.request("POST", KEYS_PATH, api_key("std2", ["standalone"]), admin_headers()).status == 201
    assert router.request("GET", "/v1/jobs", headers=bearer(secret("std2"))).status == 200
    assert router.request("GET", "/v1/jobs", headers={"x-api-key": secret("std")}).status == 200
    assert router.request("GET", "/v1/jobs", headers=bearer(secret("extra"))).status == 401
    assert router.request("GET", "/v1/router/status", headers=bearer(secret("rt"))).status == 200
    assert router.request("GET", CONFIG, headers=admin_headers(OTHER_ADMIN_KEY)).status == 200
    assert router.request("GET", CONFIG, headers=bearer(secret("std"))).status == 401
    router.kill(signal.SIGTERM)
    router = router.start()
    reply = router.request("GET", CONFIG, headers=admin_headers())
    assert reply.json()["version"] == 2 and [k["id"] for k in reply.json()["apiKeys"]] == ["std", "rt", "std2"]
    assert router.request("GET", "/v1/jobs", headers=bearer(secret("std2"))).status == 200
    startup = [json.loads(line) for line in router.err.read_text().splitlines() if '"event":"access_policy"' in line]
    source = f"file {tmp_path / 'access.yaml'}"
    assert [(s["source"], s["version"]) for s in startup] == [(source, 1), (source, 2)]
    router.kill(signal.SIGTERM)
    audit = (tmp_path / "access-audit.jsonl").read_text()
    assert '"reason":"key_added"' in audit and '"reason":"invalid_admin_key"' in audit
    assert_no_secrets(router)
    for secret_value in [k for k, _ in KEYS.values()] + [ADMIN_KEY, OTHER_ADMIN_KEY]:
        assert secret_value not in audit


def test_sighup_reloads_an_external_edit(tmp_path):
    router = boot(tmp_path)
    edited = managed(tmp_path)
    edited["apiKeys"].append(api_key("std2", ["standalone"]))
    edited["version"] = 7
    (tmp_path / "access.yaml").write_text(yaml.safe_dump(edited))
    refused = router.request("POST", KEYS_PATH, api_key("extra", ["standalone"]), admin_headers())
    assert refused.status == 409 and refused.json()["error"]["code"] == "managed_file_changed"
    assert router.request("GET", "/v1/jobs", headers=bearer(secret("std2"))).status == 401
    router.send(signal.SIGHUP)
    wait_for(lambda: router.request("GET", "/v1/jobs", headers=bearer(secret("std2"))).status == 200, timeout=10)
    added = router.request("POST", KEYS_PATH, api_key("extra", ["standalone"]), admin_headers())
    assert added.status == 201 and added.headers["etag"] == '"8"'
    router.kill(signal.SIGTERM)
    assert '"event":"access_reloaded"' in router.err.read_text()
    assert_no_secrets(router)
