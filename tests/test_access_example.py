"""examples/gex44-secured.yaml: refused with its placeholders, locked down on every plane once filled in."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from access_support import ADMIN_HASH, ADMIN_KEY, KEYS, bearer, secret
from conftest import chat_body

from ollama_agent_router.config.files import load_config_file
from ollama_agent_router.config.reader import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gex44-secured.yaml"
PLACEHOLDERS = {
    "sha256:REPLACE-with-the-hash-from-oar-gen-key": KEYS["std"][1],
    "sha256:REPLACE-with-the-hash-of-the-kong-runtime-key": KEYS["rt"][1],
    "sha256:REPLACE-with-the-hash-of-the-admin-key": ADMIN_HASH,
}


def filled_in(tmp_path: Path) -> str:
    text = EXAMPLE.read_text().replace("/var/lib/ollama-agent-router", str(tmp_path))
    for placeholder, value in PLACEHOLDERS.items():
        assert placeholder in text
        text = text.replace(placeholder, value)
    return text


def test_shipped_example_refuses_to_start_until_the_hashes_are_replaced():
    with pytest.raises(ConfigError) as e:
        load_config_file(str(EXAMPLE), bootstrap=False)
    assert len(e.value.errors) == 3 and all("sha256:<64 hex chars>" in err for err in e.value.errors)


def test_filled_in_example_locks_every_plane(tmp_path, stack_factory):
    path = tmp_path / "config.yaml"
    path.write_text(filled_in(tmp_path))
    config = load_config_file(str(path))
    assert (tmp_path / "access.yaml").exists()
    planes = config.access.managed.planes
    assert all(p.enabled and p.auth.require_api_key and p.auth.anonymous == "reject" for p in planes.values())
    assert config.access.admin.allowed_ips == ("127.0.0.1", "::1") and config.metrics.require_api_key

    raw = yaml.safe_load(path.read_text())
    raw["access"]["managedConfigPath"] = str(tmp_path / "state" / "access.yaml")
    stack = stack_factory({"access": raw["access"], "metrics": raw["metrics"]})
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there")).status == 401
    assert stack.request("POST", "/v1/chat/completions", chat_body("Hello there"), bearer(secret("std"))).status == 200
    assert stack.request("GET", "/v1/router/status").status == 401
    assert stack.request("GET", "/v1/jobs").status == 401
    assert stack.request("GET", "/v1/router/status", headers=bearer(secret("rt"))).status == 200
    assert stack.request("GET", "/metrics").status == 401
    assert stack.request("GET", "/metrics", headers=bearer(secret("rt"))).status == 200
    assert stack.request("GET", "/v1/admin/access/config", headers=bearer(ADMIN_KEY)).status == 200
    assert stack.request("GET", "/v1/admin/access/config", headers=bearer(secret("std"))).status == 401
