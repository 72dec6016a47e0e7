"""Config loading, schema, cross-field checks and the managed access file."""

from __future__ import annotations

import copy
import datetime
import os
import re
import stat
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from ollama_agent_router.config import files
from ollama_agent_router.config import parse as cfg
from ollama_agent_router.config.access import managed_to_json
from ollama_agent_router.config.reader import ConfigError, load_yaml
from ollama_agent_router.config.schema import ApiKey, ManagedAccess, PlaneAuth, PlaneConfig, TrafficLimit

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "gex44.yaml"
PACKAGED = REPO / "ollama_agent_router" / "data" / "gex44.yaml"
SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64
PBKDF2 = "pbkdf2-sha256:600000:" + "00ff" * 8 + ":" + "ab" * 32
SCRYPT = "scrypt:16384:8:1:" + "0a" * 16 + ":" + "cd" * 32


def base() -> dict:
    """The original's testConfig(), as plain data."""
    model = {"maxConcurrent": 1, "defaultContext": 4096, "maxContext": 8192, "timeoutMs": 10000}
    return {
        "server": {"nodeId": "test-node", "host": "127.0.0.1", "port": 1, "requestBodyLimit": "2mb"},
        "ollama": {"baseUrl": "http://127.0.0.1:11434", "requestTimeoutMs": 10000},
        "gpu": {
            "provider": "nvidia",
            "name": "Test GPU",
            "vramTotalMb": 20480,
            "vramSafetyReserveMb": 512,
            "maxGpuUtilizationPct": 95,
            "monitor": {"enabled": False, "intervalMs": 5000},
        },
        "router": {
            "syncMaxQueueTimeMs": 50,
            "heavyLoadQueueDepth": 5,
            "heavyLoadGpuFreeMbThreshold": 1024,
            "classification": {"classifierTimeoutMs": 1500},
        },
        "jobs": {"resultTtlSeconds": 3600, "maxAttempts": 1, "cleanupIntervalMs": 1000},
        "models": [
            {**model, "name": "vibethinker", "sizeGb": 3.6, "maxConcurrent": 2, "costClass": "low"},
            {**model, "name": "qwen2.5-coder:7b", "sizeGb": 4.7},
            {**model, "name": "deepseek-coder:6.7b", "sizeGb": 3.8},
            {**model, "name": "gpt-oss:20b", "sizeGb": 14, "exclusive": True, "costClass": "high"},
        ],
        "routes": {
            "code_review": ["deepseek-coder:6.7b", "qwen2.5-coder:7b"],
            "agentic_reasoning": ["gpt-oss:20b", "qwen2.5-coder:7b"],
            "unknown": ["vibethinker"],
        },
        "queue": {"globalMaxConcurrent": 4, "globalMaxQueued": 50, "perUserMaxQueued": 10, "timeoutMs": 10000},
    }


def with_admin(data: dict, **admin) -> dict:
    data["access"] = {"admin": {"enabled": True, **admin}}
    return data


def errors_of(data, **kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg.parse_config(data, **kwargs)
    return info.value.errors


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# --- The original's config tests ---------------------------------------------------------------------


def test_gex44_parses_with_gpt_oss_exclusive():
    config = files.load_config_file(str(EXAMPLE))
    gpt = config.model("gpt-oss:20b")
    assert gpt is not None and gpt.exclusive is True and gpt.allow_when_busy is False
    assert gpt.size_gb == 14 and isinstance(gpt.size_gb, int)
    assert config.server.node_id == "gex44-a" and config.server.port == 11435
    assert config.server.request_body_limit == 8 * 1024 * 1024
    assert config.router.classification.optional_classifier_model == "B-A-M-N/vibethinker:1.5b"
    assert config.routes["planning"] == ("gpt-oss:20b",)
    assert config.model("B-A-M-N/vibethinker:1.5b").purpose == ("triage", "simple_chat", "summarize")
    assert config.access.present is False and config.path == str(EXAMPLE)


def test_packaged_profile_is_the_example_plus_an_embedder():
    packaged, example = yaml.safe_load(PACKAGED.read_text()), yaml.safe_load(EXAMPLE.read_text())
    embedder = packaged["models"].pop()
    assert packaged == example
    assert "embedding" in embedder["purpose"] and embedder["name"] not in {m for r in example["routes"].values() for m in r}
    assert files.load_config_file(str(PACKAGED)).models[:-1] == files.load_config_file(str(EXAMPLE)).models


def test_route_to_missing_model_is_rejected():
    data = base()
    data["routes"]["code_review"].append("foo")
    data["routes"]["planning"] = ["bar"]
    (message,) = errors_of(data)
    assert message == "Routes reference unknown models: code_review:foo, planning:bar"


def test_https_needs_cert_and_key():
    data = base()
    data["server"]["https"] = {"enabled": True}
    with pytest.raises(ConfigError, match=r"certPath.*keyPath"):
        cfg.parse_config(data)


def test_node_id_must_be_letters_numbers_dots_dashes():
    data = base()
    data["server"]["nodeId"] = "bad_node"
    assert errors_of(data) == ["server.nodeId may contain only letters, numbers, dots, and dashes"]


def test_missing_managed_file_is_bootstrapped(tmp_path):
    data = base()
    inline = {"planes": {"runtimeAgent": {"enabled": False}}}
    data["access"] = {"managedConfigPath": "access.yaml", "managed": inline}
    path = write(tmp_path / "config.yaml", data)
    config = files.load_config_file(str(path))
    managed = tmp_path / "access.yaml"
    assert config.access.managed_config_path == str(managed)
    assert "standalone:" in managed.read_text()
    assert stat.S_IMODE(managed.stat().st_mode) == 0o600
    assert cfg.parse_managed_access(yaml.safe_load(managed.read_text())) == config.access.managed
    assert config.access.managed.planes["runtimeAgent"].enabled is False


def test_admin_needs_managed_path_then_hashes():
    with pytest.raises(ConfigError, match="managedConfigPath"):
        cfg.parse_config(with_admin(base(), apiKeyHashes=[SHA_A]))
    data = with_admin(base())
    data["access"]["managedConfigPath"] = "access.yaml"
    with pytest.raises(ConfigError, match="apiKeyHashes"):
        cfg.parse_config(data)


def test_client_cert_required_needs_https_and_ca():
    data = with_admin(base(), apiKeyHashes=[SHA_A], clientCert={"required": True})
    data["access"]["managedConfigPath"] = "access.yaml"
    with pytest.raises(ConfigError, match="caPath"):
        cfg.parse_config(data)
    data["server"]["https"] = {"enabled": True, "certPath": "c.pem", "keyPath": "k.pem", "caPath": "ca.pem"}
    config = cfg.parse_config(data, base_dir="/srv/oar")
    assert config.server.https.ca_path == "/srv/oar/ca.pem"


# --- Scalars with a format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [
        ("8mb", 8388608),
        ("4mb", 4194304),
        ("1kb", 1024),
        ("1.5mb", 1572864),
        ("8 mb", 8388608),
        ("100", 100),
        ("100b", 100),
        ("1gb", 1073741824),
        ("8MB", 8388608),
        (4096, 4096),
    ],
)
def test_bytes_limit_like_npm_bytes(text, size):
    assert cfg.parse_bytes_limit(text) == size


@pytest.mark.parametrize("text", ["8m", "8mib", "-1kb", "lots", "", "0", 0, -5, True, 1.5])
def test_bytes_limit_pitfalls_are_errors(text):
    with pytest.raises(ValueError):
        cfg.parse_bytes_limit(text)


def test_bad_body_limit_names_the_setting():
    data = base()
    data["server"]["requestBodyLimit"] = "8m"
    (message,) = errors_of(data)
    assert message.startswith("server.requestBodyLimit: invalid size '8m'")
    data["server"]["requestBodyLimit"] = "1.5 MB"
    assert cfg.parse_config(data).server.request_body_limit == 1572864


@pytest.mark.parametrize(
    "raw, normal", [("ollama-router/", "/ollama-router"), ("//", "/"), ("", "/"), ("/", "/"), (" /a/b/ ", "/a/b")]
)
def test_base_path_normalisation(raw, normal):
    assert cfg.normalize_base_path(raw) == normal


# --- YAML 1.2 ----------------------------------------------------------------------------------------


def test_yaml_1_1_traps_read_as_1_2():
    data = load_yaml(
        "a: yes\nb: on\nc: 1:30\nd: 017\ne: 2001-12-14\nf: 0o17\ng: [qwen2.5-coder:7b, gpt-oss:20b]\n"
        "h: True\ni: ~\nj: 0x1F\nk: 1e3\nl: n\nm: 2026-11-27T09:33:00.230Z\n"
    )
    assert data == {
        "a": "yes",
        "b": "on",
        "c": "1:30",
        "d": 17,
        "e": "2001-12-14",
        "f": 15,
        "g": ["qwen2.5-coder:7b", "gpt-oss:20b"],
        "h": True,
        "i": None,
        "j": 31,
        "k": 1000.0,
        "l": "n",
        "m": "2026-11-27T09:33:00.230Z",
    }
    assert yaml.safe_load("a: yes") == {"a": True}  # the global SafeLoader is untouched


def test_yaml_errors_carry_file_and_line():
    with pytest.raises(ConfigError, match=r"^/x\.yaml:3: invalid YAML"):
        load_yaml("a: 1\nb: [1,\nc: : :\n", source="/x.yaml")
    with pytest.raises(ConfigError, match=r"^/x\.yaml:3: invalid YAML: duplicate key 'a'"):
        load_yaml("a: 1\nb: 2\na: 3\n", source="/x.yaml")


def billion_laughs(levels: int = 9) -> str:
    """``levels`` levels of nine aliases each: a few hundred bytes that expand to 9**levels strings."""
    lines = ['  lol0: &a0 "lol"'] + [f"  lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "laughs:\n" + "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_at_once(tmp_path):
    """Issue 15 item 10: before the cap, 7 levels took validate-config 13 s and 1.1 GB, 9 levels far longer."""
    path = tmp_path / "c.yaml"
    path.write_text(EXAMPLE.read_text() + billion_laughs())
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            files.load_config_file(str(path), bootstrap=False, strict=True)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    line = len(EXAMPLE.read_text().splitlines()) + 7  # lol5: its first alias passes the cap
    assert info.value.errors == [f"{path}:{line}: invalid YAML: the aliases (*name) of this document expand to more"
                                 " than 10000 values; write the values out instead"]
    assert elapsed < 0.5 and peak < 8 * 1024 * 1024, (elapsed, peak)


def test_a_few_aliases_still_work_and_recursive_ones_are_refused():
    assert load_yaml("fast: &fast [a, b]\nroutes: {triage: *fast, unknown: *fast}\n")["routes"]["unknown"] == ["a", "b"]
    for text in ("a: &x [1, *x]\n", "a: &x {b: *x}\n"):
        with pytest.raises(ConfigError, match=r"^/x\.yaml:1: invalid YAML: an alias inside the node it names"):
            load_yaml(text, source="/x.yaml")


def test_yes_is_not_a_boolean_in_the_config():
    data = base()
    data["gpu"]["requireGpuOnlyByDefault"] = "yes"
    assert errors_of(data) == ["gpu.requireGpuOnlyByDefault: must be true or false, got a string"]


# --- Schema errors -----------------------------------------------------------------------------------


def test_errors_name_file_line_and_path(tmp_path):
    data = base()
    data["models"][2]["sizeGb"] = 0
    path = write(tmp_path / "c.yaml", data)
    text = path.read_text()
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "sizeGb: 0" in s)
    with pytest.raises(ConfigError) as info:
        files.load_config_file(str(path))
    assert info.value.errors == [f"{path}:{line}: models[2].sizeGb: must be a number > 0, got 0"]
    assert str(info.value) == info.value.errors[0]


def test_all_errors_are_collected():
    data = base()
    data["server"]["port"] = "11435"
    del data["ollama"]["baseUrl"]
    data["queue"]["defaultPriority"] = "urgent"
    data["models"][0]["costClass"] = "small"
    errors = errors_of(data)
    assert errors == [
        "server.port: must be an integer >= 1 and <= 65535, got a string",
        "ollama.baseUrl: is required",
        "models[0].costClass: must be one of low, medium, high",
        "queue.defaultPriority: must be one of low, normal, high",
    ]


def test_a_missing_section_is_reported_once():
    data = base()
    del data["gpu"]
    assert errors_of(data) == ["gpu: is required"]
    assert errors_of([]) == ["(top level): must be a mapping, got a list"]


def test_defaults_types_and_unknown_keys():
    data = base()
    data["models"][0].update(tags=["fast"], publicBaseUrl="x", sizeGb=14.0)
    data["logging"] = {"level": "debug"}
    config = cfg.parse_config(data)
    model = config.models[0]
    assert model.tags == ("fast",) and model.size_gb == 14 and isinstance(model.size_gb, int)
    assert (model.priority, model.cost_class, model.purpose) == (50, "low", ())
    assert config.server.base_path == "/" and config.ollama.keep_alive == "5m"
    assert config.router.default_task_type == "unknown" and config.queue.default_priority == "normal"
    assert config.jobs.store == "memory" and config.access.admin.allowed_ips == ("127.0.0.1", "::1")
    assert config.path is None
    assert config.warnings == (  # the original dropped unknown keys silently; here they are warnings
        "models[0].tags[0]: 'fast' is neither a core task type nor a route name, so only requests that give it"
        " as router.taskType match it",
        "logging: unknown key",
        "models[0].publicBaseUrl: unknown key",
    )


# --- Mistakes that do not stop a config (issue 14 part 4) ------------------------------------------------

TYPOS = """\
server:
  host: 127.0.0.1
  prot: 8080
  port: 11435
  requestBodyLimit: 8mb
  https: {enabled: false, certPth: x}
"""


def typo_config() -> tuple[dict, str]:
    """``base()`` as YAML text with misspelt keys at several depths, so that lines can be checked."""
    data = base()
    del data["server"]
    data["models"][0]["priorty"] = 70
    data["access"] = {"admin": {"clientCert": {"requird": True}}}
    text = TYPOS + yaml.safe_dump(data, sort_keys=False)
    return yaml.safe_load(text), text


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_unknown_keys_are_errors_when_strict_with_line_path_and_suggestion():
    data, text = typo_config()
    with pytest.raises(ConfigError) as info:
        cfg.parse_config(data, source="/c.yaml", text=text, strict=True)
    assert info.value.errors == [
        "/c.yaml:3: server.prot: unknown key (did you mean 'port'?)",
        "/c.yaml:6: server.https.certPth: unknown key (did you mean 'certPath'?)",
        f"/c.yaml:{line_of(text, 'priorty')}: models[0].priorty: unknown key (did you mean 'priority'?)",
        f"/c.yaml:{line_of(text, 'requird')}: access.admin.clientCert.requird: unknown key (did you mean 'required'?)",
    ]


def test_unknown_keys_are_one_warning_each_otherwise_and_the_config_is_used():
    data, text = typo_config()
    config = cfg.parse_config(data, source="/c.yaml", text=text)
    assert config.server.port == 11435 and config.models[0].priority == 50
    with pytest.raises(ConfigError) as info:
        cfg.parse_config(data, source="/c.yaml", text=text, strict=True)
    assert list(config.warnings) == info.value.errors


def test_every_known_key_is_known():
    """The shipped examples and everything configure writes use only known keys (no warning at all)."""
    for path in (EXAMPLE, REPO / "ollama_agent_router" / "data" / "starter.yaml"):
        assert files.load_config_file(str(path), bootstrap=False, strict=True).warnings == ()
    data = base()
    data["1"] = 2
    data["routes"]["planning"] = ["vibethinker"]  # a route name is free
    data["models"][0]["purpose"] = ["planning", "code_generate"]
    assert cfg.parse_config(data).warnings == ("1: unknown key",)
    data["server"][7] = "x"
    assert cfg.parse_config(data).warnings == ("1: unknown key", "server: unknown key 7")


def test_a_purpose_or_tag_naming_no_task_type_is_a_warning_with_a_suggestion():
    data = base()
    data["models"][0].update(purpose=["code_genrate", "triage"], tags=["zzz"])
    text = yaml.safe_dump(data, sort_keys=False)
    config = cfg.parse_config(data, source="/c.yaml", text=text, strict=True)  # a warning even when strict
    tail = " is neither a core task type nor a route name, so only requests that give it as router.taskType match it"
    assert config.warnings == (
        f"/c.yaml:{line_of(text, 'code_genrate')}: models[0].purpose[0]: 'code_genrate'{tail}"
        " (did you mean 'code_generate'?)",
        f"/c.yaml:{line_of(text, 'zzz')}: models[0].tags[0]: 'zzz'{tail}",
    )


def test_a_placeholder_hash_says_what_to_run():
    data = base()
    data["access"] = {"managed": {"apiKeys": [{"id": "k", "keyHash": "sha256:REPLACE-me", "scopes": ["standalone"]}]}}
    (message,) = errors_of(data)
    assert message.endswith("; run `oar gen-key` for a new key and its hash, or `oar hash-key` to hash a key you"
                            " already have")


def test_the_managed_file_s_unknown_keys_follow_the_same_rule(tmp_path):
    path = write(tmp_path / "c.yaml", {**base(), "access": {"managedConfigPath": "access.yaml"}})
    (tmp_path / "access.yaml").write_text("version: 1\nplanes:\n  standalone: {enabeld: false}\n")
    expected = f"{tmp_path / 'access.yaml'}:3: planes.standalone.enabeld: unknown key (did you mean 'enabled'?)"
    assert files.load_config_file(str(path), bootstrap=False).warnings == (expected,)
    with pytest.raises(ConfigError) as info:
        files.load_config_file(str(path), bootstrap=False, strict=True)
    assert info.value.errors == [expected]


def test_new_keys_are_read():
    data = base()
    data["server"].update(maxConnections=10, allowedOrigins=["https://App.example.com"], shutdownGraceMs=0)
    data["router"].update(unknownModel="reject", failover={"maxAttempts": 3}, defaultTaskType="planning")
    data["router"]["classification"].update(largeContextTokens=9000, minConfidence=0.5)
    data["jobs"].update(store="sqlite", maxRetainedJobs=5)
    data["models"][0].update(aliases=["small"], pinned=True, prewarm=True)
    data["queue"]["agingMs"] = 1000
    data["metrics"] = {"requireApiKey": True, "bind": "[::1]:9100"}
    config = cfg.parse_config(data, base_dir="/srv/oar")
    assert config.server.max_connections == 10 and config.server.allowed_origins == ("https://app.example.com",)
    assert config.router.unknown_model == "reject" and config.router.failover.max_attempts == 3
    assert config.router.failover.cooldown_ms == 30_000 and config.router.default_task_type == "planning"
    assert config.router.classification.min_confidence == 0.5
    assert config.jobs.sqlite_path == "/srv/oar/jobs.sqlite" and config.jobs.max_retained_jobs == 5
    assert config.models[0].aliases == ("small",) and config.models[0].pinned
    assert config.queue.aging_ms == 1000 and config.metrics.bind == "[::1]:9100"


@pytest.mark.parametrize(
    "section, key, value, problem",
    [
        ("server", "port", 0, "server.port: must be an integer >= 1 and <= 65535, got 0"),
        ("server", "port", 8080.5, "server.port: must be an integer >= 1 and <= 65535, got 8080.5"),
        ("ollama", "baseUrl", "localhost:11434", "ollama.baseUrl: must be an http:// or https:// URL"),
        ("router", "unknownModel", "drop", "router.unknownModel: must be one of route, reject"),
        ("jobs", "store", "redis", "jobs.store: must be one of memory, sqlite"),
        ("queue", "agingMs", -1, "queue.agingMs: must be an integer >= 0, got -1"),
        ("queue", "loadBatching", "no", "queue.loadBatching: must be true or false, got a string"),
        ("server", "allowedOrigins", ["*"], "server.allowedOrigins[0]: must be a browser origin"),
        ("metrics", "bind", "::1:9100", 'metrics.bind: must be "host:port"'),
    ],
)
def test_bad_values(section, key, value, problem):
    data = base()
    data.setdefault(section, {})[key] = value
    (message,) = errors_of(data)
    assert message.startswith(problem)


def test_min_confidence_and_context_bounds():
    data = base()
    data["router"]["classification"]["minConfidence"] = 1.5
    data["models"][1]["defaultContext"] = 9000
    assert errors_of(data) == [
        "router.classification.minConfidence: must be a number >= 0 and <= 1, got 1.5",
        "models[1].defaultContext: must be <= maxContext (8192)",
    ]


def test_settings_of_the_original_that_have_no_effect_are_accepted():
    """docs/migrating.md: the original's configs keep working; these keys change nothing, there or here."""
    data = base()
    data["router"]["classification"]["mode"] = "model"  # the original has no model classifier either
    assert cfg.parse_config(data).router.classification.mode == "model"
    del data["gpu"]["maxGpuUtilizationPct"]  # required by the original, never read by it
    cfg.parse_config(data)
    data["gpu"]["maxGpuUtilizationPct"] = 0  # when given, it still has to be what the original accepted
    assert errors_of(data) == ["gpu.maxGpuUtilizationPct: must be a number >= 1 and <= 100, got 0"]


def test_duplicate_names_and_aliases():
    data = base()
    data["models"][3]["name"] = "vibethinker"
    data["models"][1]["aliases"] = ["deepseek-coder:6.7b"]
    data["models"][2]["aliases"] = ["coder"]
    data["models"][0]["aliases"] = ["coder"]
    data["routes"] = {}
    assert errors_of(data) == [
        "models[3].name: duplicate model name 'vibethinker'",
        "models[1].aliases[0]: alias 'deepseek-coder:6.7b' is already taken by model 'deepseek-coder:6.7b'",
        "models[2].aliases[0]: alias 'coder' is already taken by model 'vibethinker'",
    ]


def test_routes_shape():
    data = base()
    data["routes"] = {"planning": [], "x": "gpt-oss:20b"}
    assert errors_of(data) == ["routes.x: must be a list of model names"]
    data["routes"] = {"planning": []}
    assert cfg.parse_config(data).routes == {"planning": ()}
    data["models"] = []
    assert errors_of(data) == ["models: must contain at least one model"]


# --- Access ------------------------------------------------------------------------------------------


def test_managed_config_path_empty_is_an_error_and_null_is_absent():
    data = base()
    data["access"] = {"managedConfigPath": ""}
    assert errors_of(data) == ["access.managedConfigPath: must not be empty"]
    data["access"] = {"managedConfigPath": None}
    access = cfg.parse_config(data).access
    assert access.present is True and access.managed_config_path is None


def test_limited_anonymous_needs_a_default_limit():
    managed = {"planes": {"standalone": {"auth": {"anonymous": "limited"}}}}
    with pytest.raises(ConfigError, match=r"planes\.standalone\.auth\.anonymous: limited needs a defaultLimit"):
        cfg.parse_managed_access(managed)
    managed["planes"]["standalone"]["defaultLimit"] = {"requests": 10, "windowSeconds": 60}
    plane = cfg.parse_managed_access(managed).planes["standalone"]
    assert plane.default_limit == TrafficLimit(10, 60) and plane.auth.anonymous == "limited"


def test_partial_planes_get_defaults():
    m = cfg.parse_managed_access({"planes": {"standalone": {"enabled": False}}})
    assert m.planes["standalone"] == PlaneConfig(enabled=False)
    assert m.planes["runtimeAgent"] == PlaneConfig() and m.api_keys == () and m.version == 1


def test_admin_addresses_are_validated_and_canonical():
    data = with_admin(base(), apiKeyHashes=[SHA_A], allowedIps=["10.0.0.1/8", "::0001", "127.0.0.1"])
    data["access"]["managedConfigPath"] = "access.yaml"
    data["access"]["admin"]["trustedProxies"] = ["192.168.1.7", "fd00::/8"]
    admin = cfg.parse_config(data).access.admin
    assert admin.allowed_ips == ("10.0.0.0/8", "::1", "127.0.0.1")
    assert admin.trusted_proxies == ("192.168.1.7/32", "fd00::/8")
    data["access"]["admin"]["allowedIps"] = ["10.0.0.0/33", "localhost"]
    data["access"]["admin"]["trustedProxies"] = ["1.2.3"]
    assert errors_of(data) == [
        "access.admin.allowedIps[0]: must be an IP address or a CIDR network, got '10.0.0.0/33'",
        "access.admin.allowedIps[1]: must be an IP address or a CIDR network, got 'localhost'",
        "access.admin.trustedProxies[0]: must be an IP address or a CIDR network, got '1.2.3'",
    ]


def test_admin_hash_entries_and_fingerprints():
    data = with_admin(
        base(),
        apiKeyHashes=[SHA_A.upper().replace("SHA256", "sha256"), {"id": "ops", "hash": PBKDF2}, SCRYPT],
        clientCert={"allowedFingerprints": ["AB:" * 31 + "AB"]},
    )
    data["access"]["managedConfigPath"] = "access.yaml"
    admin = cfg.parse_config(data).access.admin
    assert [(k.id, k.hash) for k in admin.api_key_hashes] == [(None, SHA_A), ("ops", PBKDF2), (None, SCRYPT)]
    assert admin.client_cert.allowed_fingerprints == ("ab" * 32,)
    data["access"]["admin"]["apiKeyHashes"] = ["sha256:replace-with-admin-hash", {"id": "x y", "hash": SHA_B}]
    errors = errors_of(data)
    assert errors[0].startswith("access.admin.apiKeyHashes[0]: must use sha256:<64 hex chars>")
    assert errors[1].startswith("access.admin.apiKeyHashes[1].id: api key id may contain only")


def key(**fields) -> dict:
    return {"id": "local-client", "keyHash": SHA_A, "scopes": ["standalone"], **fields}


@pytest.mark.parametrize("hash_", [SHA_A, "sha256:" + "A" * 64, PBKDF2, SCRYPT, "scrypt" + SCRYPT[6:].upper()])
def test_key_hash_formats_are_accepted(hash_):
    assert cfg.parse_api_key(key(keyHash=hash_)).key_hash == hash_.lower()


@pytest.mark.parametrize(
    "hash_",
    [
        "sha256:replace-with-a-real-hash",
        "not-a-valid-hash",
        "sha256:" + "a" * 63,
        "pbkdf2-sha256:0:00:ab",
        "pbkdf2-sha256:1000:0:ab",
        "scrypt:1000:8:1:00:ab",
        "md5:" + "a" * 32,
    ],
)
def test_bad_key_hashes_are_rejected(hash_):
    with pytest.raises(ConfigError, match=re.escape("keyHash: keyHash must use sha256:<64 hex chars>")):
        cfg.parse_api_key(key(keyHash=hash_))


def test_api_key_fields():
    parsed = cfg.parse_api_key(key(limits={"runtimeAgent": {"requests": 5, "windowSeconds": 1}, "x": {}}, extra=1))
    assert parsed == ApiKey(
        id="local-client", key_hash=SHA_A, scopes=("standalone",), limits={"runtimeAgent": TrafficLimit(5, 1)}
    )
    with pytest.raises(ConfigError) as info:
        cfg.parse_api_key(key(id="a b", scopes=["admin"], limits={"standalone": {"requests": 0}}))
    assert info.value.errors == [
        "id: api key id may contain only letters, numbers, dots, underscores, colons, and dashes",
        "scopes[0]: must be one of standalone, runtimeAgent",
        "limits.standalone.requests: must be an integer > 0, got 0",
        "limits.standalone.windowSeconds: is required",
    ]
    with pytest.raises(ConfigError, match="scopes: must name at least one of standalone, runtimeAgent"):
        cfg.parse_api_key(key(scopes=[]))
    with pytest.raises(ConfigError, match="scopes: is required"):
        cfg.parse_api_key({"id": "a", "keyHash": SHA_A})


def test_expires_at_accepts_a_datetime_and_iso_z():
    when = datetime.datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert cfg.parse_api_key(key(expiresAt=when)).expires_at == "2026-01-31T11:00:00.250Z"
    naive = datetime.datetime(2026, 1, 31)  # what PyYAML gives for an unquoted timestamp without a zone
    assert cfg.parse_api_key(key(expiresAt=naive)).expires_at == "2026-01-31T00:00:00.000Z"
    assert cfg.parse_api_key(key(expiresAt="2026-01-31T12:00:00Z")).expires_at == "2026-01-31T12:00:00Z"
    for bad in ("2026-01-31T12:00:00+01:00", "2026-02-30T12:00:00Z", "tomorrow"):
        with pytest.raises(ConfigError, match="expiresAt: must be an ISO-8601 UTC timestamp ending in Z"):
            cfg.parse_api_key(key(expiresAt=bad))


def test_duplicate_key_ids_and_hashes():
    with pytest.raises(ConfigError) as info:
        cfg.parse_managed_access({"apiKeys": [key(), key(keyHash=SHA_B), key(id="other")]})
    assert info.value.errors == [
        "apiKeys[1].id: duplicate API key id 'local-client'",
        "apiKeys[2].keyHash: the same hash is already used by another API key",
    ]


# --- Managed file ------------------------------------------------------------------------------------


def sample_managed() -> ManagedAccess:
    return ManagedAccess(
        version=4,
        updated_at="2026-11-27T09:33:00.230Z",
        planes={
            "standalone": PlaneConfig(enabled=False, auth=PlaneAuth(True, "reject")),
            "runtimeAgent": PlaneConfig(default_limit=TrafficLimit(2000, 60)),
        },
        api_keys=(
            ApiKey(id="yes", key_hash=SHA_A, scopes=("standalone", "runtimeAgent"), name="1e5"),
            ApiKey(
                id="kong",
                key_hash=PBKDF2,
                scopes=("runtimeAgent",),
                enabled=False,
                expires_at="2027-01-01T00:00:00Z",
                limits={"runtimeAgent": TrafficLimit(1, 2)},
            ),
        ),
    )


def test_dump_round_trips_and_quotes_updated_at():
    m = sample_managed()
    text = cfg.dump_managed_access(m)
    assert 'updatedAt: "2026-11-27T09:33:00.230Z"' in text
    assert "null" not in text and "None" not in text
    assert [line.split(":")[0] for line in text.splitlines() if not line.startswith((" ", "-"))] == [
        "version", "planes", "apiKeys", "updatedAt"]
    assert cfg.parse_managed_access(load_yaml(text)) == m
    assert cfg.parse_managed_access(yaml.safe_load(text)) == m  # a YAML 1.1 reader sees the same
    assert cfg.dump_managed_access(ManagedAccess()).splitlines()[-1] == "apiKeys: []"


def test_managed_to_json_shape():
    out = managed_to_json(sample_managed())
    assert list(out) == ["version", "planes", "apiKeys", "updatedAt"]
    assert out["planes"]["runtimeAgent"] == {
        "enabled": True,
        "auth": {"requireApiKey": False, "anonymous": "allow"},
        "defaultLimit": {"requests": 2000, "windowSeconds": 60},
    }
    assert out["apiKeys"][0] == {"id": "yes", "name": "1e5", "keyHash": SHA_A, "enabled": True,
                                 "scopes": ["standalone", "runtimeAgent"]}
    assert list(out["apiKeys"][1]) == ["id", "keyHash", "enabled", "scopes", "limits", "expiresAt"]


def test_existing_managed_file_replaces_inline_policy(tmp_path):
    data = base()
    data["access"] = {"managedConfigPath": "state/access.yaml", "managed": {"version": 7}}
    path = write(tmp_path / "config.yaml", data)
    # As the original writes it: updatedAt unquoted.
    original = "version: 3\nplanes: {}\napiKeys: []\nupdatedAt: 2026-11-27T09:33:00.230Z\n"
    write(tmp_path / "state" / "access.yaml", original)
    managed = files.load_config_file(str(path)).access.managed
    assert (managed.version, managed.updated_at) == (3, "2026-11-27T09:33:00.230Z")


def test_bad_managed_file_names_its_path_and_line(tmp_path):
    data = base()
    data["access"] = {"managedConfigPath": "access.yaml"}
    path = write(tmp_path / "config.yaml", data)
    managed = write(tmp_path / "access.yaml", "version: 1\napiKeys:\n  - id: a\n    keyHash: sha256:replace-me\n"
                    "    scopes: [standalone]\n")
    for bootstrap in (True, False):
        expected = rf"^{re.escape(str(managed))}:4: apiKeys\[0\]\.keyHash: keyHash must use"
        with pytest.raises(ConfigError, match=expected):
            files.load_config_file(str(path), bootstrap=bootstrap)
    write(managed, "")
    with pytest.raises(ConfigError, match="must be a mapping, got null"):
        files.load_config_file(str(path))


def test_validation_without_bootstrap_writes_nothing(tmp_path):
    data = base()
    data["access"] = {"managedConfigPath": "state/access.yaml"}
    path = write(tmp_path / "config.yaml", data)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    config = files.load_config(str(path), bootstrap=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert config.access.managed == ManagedAccess()


def test_missing_managed_file_without_bootstrap_is_an_error(tmp_path):
    data = base()
    data["access"] = {"managedConfigPath": "access.yaml", "bootstrapIfMissing": False}
    path = write(tmp_path / "config.yaml", data)
    with pytest.raises(ConfigError, match=re.escape(f"Managed access file not found: {tmp_path / 'access.yaml'}")):
        files.load_config_file(str(path))


def test_bootstrap_failure_is_a_config_error(tmp_path, monkeypatch):
    data = base()
    data["access"] = {"managedConfigPath": "access.yaml"}
    path = write(tmp_path / "config.yaml", data)

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(files, "atomic_write_text", read_only)
    with pytest.raises(ConfigError, match="Cannot create the managed access file .*: Read-only file system"):
        files.load_config_file(str(path))
    blocker = write(tmp_path / "file", "x")
    data["access"] = {"managedConfigPath": str(blocker / "access.yaml")}
    write(path, data)
    with pytest.raises(ConfigError, match="access.yaml: cannot read: Not a directory"):
        files.load_config_file(str(path))


def test_unwritable_managed_directory_fails_at_boot_only_with_admin(tmp_path, monkeypatch):
    data = with_admin(base(), apiKeyHashes=[SHA_A])
    data["access"]["managedConfigPath"] = "state/access.yaml"
    path = write(tmp_path / "config.yaml", data)
    write(tmp_path / "state" / "access.yaml", "version: 2\n")
    assert files.load_config_file(str(path)).access.managed.version == 2
    monkeypatch.setattr(files.os, "access", lambda *args, **kwargs: False)
    assert files.load_config_file(str(path), bootstrap=False).access.managed.version == 2
    with pytest.raises(ConfigError, match=r"the directory .*/state is not writable"):
        files.load_config_file(str(path))


# --- Lookup ------------------------------------------------------------------------------------------


@pytest.fixture
def places(tmp_path, monkeypatch):
    """An empty working directory and home."""
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    return cwd, home


def test_lookup_order(places):
    cwd, home = places
    assert files.lookup_paths(None) == [
        str(cwd / "ollama-agent-router.yaml"),
        str(home / ".config" / "ollama-agent-router" / "config.yaml"),
        "/etc/ollama-agent-router/config.yaml",
    ]
    assert files.lookup_paths("x.yaml") == [str(cwd / "x.yaml")]
    home_file = write(home / ".config" / "ollama-agent-router" / "config.yaml", base())
    if not os.path.exists("/etc/ollama-agent-router/config.yaml"):
        assert files.find_config(None) == str(home_file)
    local = write(cwd / "ollama-agent-router.yaml", base())
    assert files.find_config(None) == str(local)
    assert files.load_config().path == str(local)


def test_explicit_missing_config_never_falls_back(places):
    cwd, _ = places
    write(cwd / "ollama-agent-router.yaml", base())
    with pytest.raises(ConfigError, match=re.escape(f"Config file not found: {cwd / 'missing.yaml'}")):
        files.load_config("missing.yaml")
    with pytest.raises(ConfigError, match="Config file not found"):
        files.load_config_file(str(cwd / "missing.yaml"))


@pytest.mark.skipif(os.path.exists("/etc/ollama-agent-router/config.yaml"), reason="a system config exists")
def test_no_config_found(places):
    with pytest.raises(ConfigError) as info:
        files.find_config(None)
    assert str(info.value) == "No config file found. Tried: " + ", ".join(files.lookup_paths(None))


def test_relative_paths_resolve_against_the_config_directory(tmp_path):
    data = copy.deepcopy(base())
    data["jobs"].update(store="sqlite", sqlitePath="db/jobs.sqlite")
    data["access"] = {"managedConfigPath": "../state/access.yaml", "admin": {"auditLogPath": "audit.jsonl"}}
    path = write(tmp_path / "etc" / "config.yaml", data)
    config = files.load_config_file(str(path))
    assert config.jobs.sqlite_path == str(tmp_path / "etc" / "db" / "jobs.sqlite")
    assert config.access.managed_config_path == str(tmp_path / "state" / "access.yaml")
    assert config.access.admin.audit_log_path == str(tmp_path / "etc" / "audit.jsonl")
