"""The pure parts of access control, on plain data: keys, addresses, certificates, the managed store."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import ipaddress
import os
import re
import stat
import threading
import time

import pytest
import yaml
from access_support import access, api_key, plane
from conftest import _ListStream, make_config
from test_config import billion_laughs

from ollama_agent_router.access.control import AccessControl, changed_keys
from ollama_agent_router.access.kdf import Deriver
from ollama_agent_router.access.keys import (
    MIN_KEY_LENGTH,
    UNUSABLE,
    KeyEntry,
    KeyIndex,
    extract_credential,
    generate_key,
    hash_key,
    is_masked,
    mask_hash,
    verify_salted,
)
from ollama_agent_router.access.managed import ManagedStore
from ollama_agent_router.access.netaddr import (
    AddressSet,
    ClientResolver,
    bucket_id,
    client_address,
    is_loopback,
    parse_address,
)
from ollama_agent_router.access.tlsauth import CertPolicy, PeerCert, parse_subject_pattern
from ollama_agent_router.config import parse as cfgmod
from ollama_agent_router.config.reader import ConfigError
from ollama_agent_router.config.schema import ApiKey, ManagedAccess
from ollama_agent_router.errors import HttpError
from ollama_agent_router.log import Logger

# ---- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers,expected", [
    ({"authorization": "Bearer abc"}, "abc"),
    ({"authorization": "bearer   abc  "}, "abc"),
    ({"authorization": "BEARER\tabc"}, "abc"),
    ({"authorization": "Bearer abc", "x-api-key": "other"}, "abc"),
    ({"x-api-key": "  k1 "}, "k1"),
    ({"authorization": "Basic dXNlcjpwYXNz", "x-api-key": "k1"}, "k1"),  # a gateway's own Authorization
    ({}, None),
    ({"authorization": "Bearer"}, UNUSABLE),
    ({"authorization": "Basic dXNlcjpwYXNz"}, UNUSABLE),
    ({"authorization": "just-a-token"}, UNUSABLE),
    ({"x-api-key": "   "}, UNUSABLE),
    ({"authorization": "Bearer", "x-api-key": ""}, UNUSABLE),
])
def test_extract_credential(headers, expected):
    assert extract_credential(headers) == expected


def test_generated_keys_and_sha256_hashes():
    key, stored = generate_key()
    assert key.startswith("oar-") and len(key) == 52
    assert stored == "sha256:" + hashlib.sha256(key.encode()).hexdigest() == hash_key(key)
    assert cfgmod.parse_api_key({"id": "k", "keyHash": stored, "scopes": ["standalone"]}).key_hash == stored
    assert generate_key()[0] != key


def test_hash_key_refuses_short_keys_and_unknown_schemes():
    with pytest.raises(ValueError, match=str(MIN_KEY_LENGTH)):
        hash_key("short")
    with pytest.raises(ValueError, match="unknown hash scheme"):
        hash_key("x" * 20, "md5")


@pytest.mark.parametrize("scheme", ["pbkdf2-sha256", "scrypt"])
def test_salted_hashes_verify_and_parse(scheme, monkeypatch):
    monkeypatch.setattr("ollama_agent_router.access.keys.PBKDF2_ITERATIONS", 1000)  # the real count is slow on purpose
    stored = hash_key("correct horse battery staple", scheme)
    assert stored.startswith(scheme + ":")
    assert cfgmod.parse_api_key({"id": "k", "keyHash": stored, "scopes": ["standalone"]}).key_hash == stored
    assert verify_salted("correct horse battery staple", stored)
    assert not verify_salted("correct horse battery stapler", stored)
    assert hash_key("correct horse battery staple", scheme) != stored  # salted


def pbkdf2(key: str, iterations: int = 1000) -> str:
    salt = b"0123456789abcdef"
    return f"pbkdf2-sha256:{iterations}:{salt.hex()}:{hashlib.pbkdf2_hmac('sha256', key.encode(), salt, iterations).hex()}"


def test_key_index_finds_by_hash_and_caches_salted_results(monkeypatch):
    plain, plain_hash = generate_key()
    index = KeyIndex([KeyEntry("a", plain_hash, 1), KeyEntry("b", pbkdf2("human password 1"), 2),
                      KeyEntry("dup", plain_hash, 3)])
    deriver = Deriver()

    def lookup(key: str):
        return asyncio.run(index.lookup(key, deriver, "client"))

    assert lookup(plain).id == "a"  # the first entry with a hash wins
    calls = []
    import ollama_agent_router.access.keys as keys

    real = keys.verify_salted
    monkeypatch.setattr(keys, "verify_salted", lambda k, s: calls.append((k, threading.current_thread().name))
                        or real(k, s))
    assert lookup("human password 1").item == 2
    assert lookup("human password 1").item == 2
    assert lookup("wrong password xx") is None
    assert lookup("wrong password xx") is None
    assert [k for k, _ in calls] == ["human password 1", "wrong password xx"]  # once per distinct key
    assert all(thread.startswith("oar-kdf") for _, thread in calls)  # never on the event loop's thread
    assert lookup(plain).id == "a" and len(calls) == 2  # sha256 keys never touch the KDF
    deriver.close()


def test_masking():
    assert mask_hash("sha256:" + "a" * 64) == "sha256:********"
    assert mask_hash(pbkdf2("x")) == "pbkdf2-sha256:********"
    assert is_masked("scrypt:********") and not is_masked("sha256:" + "a" * 64) and not is_masked(None)


# ---- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.1:5555", "127.0.0.1"), ("[::1]:80", "::1"), ("::1", "::1"),
    ("::ffff:10.0.0.1", "10.0.0.1"), (" 0:0:0:0:0:0:0:1 ", "::1"), ("fe80::1%eth0", "fe80::1"),
    ("unix", None), ("", None), ("1.2.3", None),
])
def test_parse_address(text, expected):
    addr = parse_address(text)
    assert (str(addr) if addr else None) == expected


def addr(text: str):
    return ipaddress.ip_address(text)


def test_address_set_with_ipv6_and_mapped_forms():
    allow = AddressSet(["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "::ffff:192.168.0.0/120"])
    assert addr("127.0.0.1") in allow and addr("::1") in allow
    assert addr("10.200.0.1") in allow and addr("11.0.0.1") not in allow
    assert addr("fd12::5") in allow and addr("fe80::1") not in allow
    assert parse_address("::ffff:10.1.1.1") in allow  # mapped client, IPv4 entry
    assert addr("192.168.0.77") in allow and addr("192.168.1.1") not in allow  # IPv4 client, mapped entry
    assert ipaddress.ip_address("::ffff:192.168.0.77") in allow
    assert None not in allow and not AddressSet([])
    only_v4 = AddressSet(["0.0.0.0/0"])
    assert addr("8.8.8.8") in only_v4 and addr("2001:db8::1") not in only_v4


def test_client_address_walks_forwarded_for_from_the_right():
    trusted = AddressSet(["10.0.0.0/24", "::1"])
    # An untrusted peer's header is ignored entirely.
    assert str(client_address("203.0.113.9", "127.0.0.1", trusted)) == "203.0.113.9"
    # A trusted proxy vouches for its right-most entry; the client's own entries on the left are ignored.
    assert str(client_address("10.0.0.2", "127.0.0.1, 198.51.100.4", trusted)) == "198.51.100.4"
    # Chains of trusted proxies are skipped.
    assert str(client_address("10.0.0.2", "198.51.100.4, 10.0.0.7", trusted)) == "198.51.100.4"
    assert str(client_address("::1", "[2001:db8::5]:443", trusted)) == "2001:db8::5"
    assert str(client_address("10.0.0.2", "198.51.100.4:5555", trusted)) == "198.51.100.4"
    assert client_address("10.0.0.2", "198.51.100.4, garbage", trusted) is None
    assert str(client_address("10.0.0.2", None, trusted)) == "10.0.0.2"
    assert str(client_address("10.0.0.2", "10.0.0.9", trusted)) == "10.0.0.9"  # only proxies: the left-most


def test_client_resolver_memoises_and_handles_long_headers():
    resolve = ClientResolver(AddressSet(["127.0.0.1"]))
    assert resolve("127.0.0.1", {"x-forwarded-for": "198.51.100.4"}).ip == "198.51.100.4"
    assert resolve("203.0.113.1", {"x-forwarded-for": "198.51.100.4"}).ip == "203.0.113.1"
    long_chain = ", ".join(["10.0.0.1"] * 100) + ", 198.51.100.9"
    client = resolve("127.0.0.1", {"x-forwarded-for": long_chain})
    assert (client.ip, client.bucket) == ("198.51.100.9", "198.51.100.9")
    assert resolve._resolve.cache_info().currsize == 2  # the long header was not memoised
    assert ClientResolver(AddressSet([]))("::1", {"x-forwarded-for": "1.2.3.4"}).ip == "::1"
    assert resolve("unix", {}).ip == "unknown"


def test_bucket_ids_group_ipv6_by_64():
    assert bucket_id(addr("203.0.113.9")) == "203.0.113.9"
    assert bucket_id(addr("2001:db8:1:2:aaaa::1")) == bucket_id(addr("2001:db8:1:2:bbbb::2")) == "2001:db8:1:2::/64"
    assert bucket_id(None) == "unknown"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")


# ---- client certificates --------------------------------------------------------------------------


def cert(*subject: tuple[str, str], fingerprint: str = "ab" * 32) -> PeerCert:
    return PeerCert(fingerprint, subject)


def test_subject_patterns_compare_exact_attribute_values():
    policy = CertPolicy(frozenset(), (parse_subject_pattern("CN=kong"),))
    assert policy.accepts(cert(("C", "PL"), ("O", "Execon"), ("CN", "kong")))
    assert not policy.accepts(cert(("CN", "kong-evil")))
    assert not policy.accepts(cert(("CN", "evil-kong")))
    assert not policy.accepts(cert(("O", "CN=kong")))  # a value that merely contains the pattern
    assert not policy.accepts(None)
    both = CertPolicy(frozenset(), (parse_subject_pattern("cn=kong, O=Execon"),))
    assert both.accepts(cert(("O", "Execon"), ("CN", "kong")))
    assert not both.accepts(cert(("O", "Other"), ("CN", "kong")))
    ou = CertPolicy(frozenset(), (parse_subject_pattern("OU=kong"),))
    assert ou.accepts(cert(("OU", "ops"), ("OU", "kong")))  # multi-valued attributes
    escaped = parse_subject_pattern(r"O=Acme\, Inc.")
    assert escaped == frozenset({("O", "Acme, Inc.")})
    for bad in ("kong", "XX=1", "CN=", "CN=kong,"):
        with pytest.raises(ValueError):
            parse_subject_pattern(bad)


def test_fingerprints_and_subjects_both_apply():
    policy = CertPolicy(frozenset({"ab" * 32}), (parse_subject_pattern("CN=kong"),))
    assert policy.accepts(cert(("CN", "kong")))
    assert not policy.accepts(cert(("CN", "kong"), fingerprint="cd" * 32))
    assert CertPolicy(frozenset(), ()).accepts(cert(("CN", "anyone")))
    assert PeerCert("00", (("C", "PL"), ("CN", "kong"))).subject_text() == "C=PL,CN=kong"


# ---- policy changes ---------------------------------------------------------------------------------


def test_changed_keys():
    a = ApiKey("a", "sha256:" + "a" * 64, ("standalone",))
    b = ApiKey("b", "sha256:" + "b" * 64, ("standalone",))
    old = ManagedAccess(api_keys=(a, b))
    new = ManagedAccess(api_keys=(a, ApiKey("b", b.key_hash, b.scopes, enabled=False),
                                  ApiKey("c", "sha256:" + "c" * 64, ("runtimeAgent",))))
    assert changed_keys(old, new) == {"b", "c"}
    assert changed_keys(new, ManagedAccess(api_keys=(a,))) == {"b", "c"}
    assert changed_keys(old, old) == set()


def test_bad_subject_pattern_fails_at_boot(tmp_path):
    override = access(path=str(tmp_path / "a.yaml"), admin={"clientCert": {"allowedSubjects": ["kong"]}})
    with pytest.raises(ConfigError, match="allowedSubjects"):
        AccessControl(make_config(override))


def test_announce_names_the_source_and_warns_about_anonymous_planes(tmp_path):
    lines: list[str] = []
    override = access(path=str(tmp_path / "a.yaml"), standalone=plane(require=True, anonymous="reject"),
                      keys=[api_key("std", ["standalone"])])
    control = AccessControl(make_config(override), log=Logger("info", _ListStream(lines)))
    control.announce("127.0.0.1")
    assert len(lines) == 1 and '"event":"access_policy"' in lines[0]
    assert f"file {tmp_path / 'a.yaml'}" in lines[0] and '"version":1' in lines[0]
    control.announce("0.0.0.0")
    warnings = [line for line in lines if "access_anonymous_plane_exposed" in line]
    assert len(warnings) == 1 and '"plane":"runtimeAgent"' in warnings[0]
    lines.clear()
    AccessControl(make_config(), log=Logger("info", _ListStream(lines))).announce("::")
    assert "no access section" in lines[0] and len([x for x in lines if "exposed" in x]) == 2


# ---- the managed store ------------------------------------------------------------------------------


def store(tmp_path, **kw) -> ManagedStore:
    return ManagedStore(str(tmp_path / "access.yaml"), ManagedAccess(), bootstrap=kw.get("bootstrap", True))


def add_key(name: str):
    key = cfgmod.parse_api_key(api_key(name, ["standalone"]))
    return lambda old: ManagedAccess(old.version, old.updated_at, old.planes, old.api_keys + (key,))


def test_store_bootstraps_with_mode_0600_and_quoted_timestamps(tmp_path):
    s = store(tmp_path)
    path = tmp_path / "access.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    old, new = s.mutate(add_key("std"), [1])
    assert (old.version, new.version) == (1, 2)
    text = path.read_text()
    assert f'updatedAt: "{new.updated_at}"' in text
    loaded = yaml.safe_load(text)  # PyYAML (YAML 1.1) keeps it a string
    assert loaded["updatedAt"] == new.updated_at and loaded["version"] == 2
    assert cfgmod.parse_managed_access(loaded) == new
    assert store(tmp_path).current == new


def test_store_without_bootstrap_needs_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        store(tmp_path, bootstrap=False)


def test_store_refuses_a_billion_laughs_on_reload_and_keeps_its_policy(tmp_path):
    """Issue 15 item 10: a 7-level block here, then SIGHUP, froze the router for 15 s at 1 GB before the cap."""
    s = store(tmp_path)
    path = tmp_path / "access.yaml"
    path.write_text(path.read_text() + billion_laughs())
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:\d+: invalid YAML: the aliases"):
        s.reload()
    assert time.perf_counter() - started < 0.5 and s.current == ManagedAccess()


def test_store_version_mismatch(tmp_path):
    s = store(tmp_path)
    with pytest.raises(HttpError) as e:
        s.mutate(add_key("std"), [7])
    assert e.value.status == 409 and e.value.message == "Access config version mismatch: expected 7, current 1"
    assert s.current.version == 1


def test_store_detects_external_edits_until_reloaded(tmp_path):
    s = store(tmp_path)
    path = tmp_path / "access.yaml"
    path.write_text(path.read_text().replace("version: 1", "version: 5"))
    with pytest.raises(HttpError) as e:
        s.mutate(add_key("std"))
    assert e.value.status == 409 and e.value.code == "managed_file_changed"
    assert s.reload().version == 5
    assert s.mutate(add_key("std"))[1].version == 6


def test_two_stores_on_one_file_cannot_overwrite_each_other(tmp_path):
    a, b = store(tmp_path), store(tmp_path)
    a.mutate(add_key("std"))
    with pytest.raises(HttpError) as e:
        b.mutate(add_key("rt"))
    assert e.value.code == "managed_file_changed"
    b.reload()
    assert [k.id for k in b.mutate(add_key("rt"))[1].api_keys] == ["std", "rt"]


def test_store_refuses_while_another_process_holds_the_lock(tmp_path):
    s = store(tmp_path)
    fd = os.open(s.lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(HttpError) as e:
            s.mutate(add_key("std"))
        assert e.value.status == 409 and e.value.code == "managed_file_locked"
    finally:
        os.close(fd)
    assert s.mutate(add_key("std"))[1].version == 2


def test_failed_write_keeps_the_old_policy_and_leaves_no_temp_file(tmp_path, monkeypatch):
    s = store(tmp_path)
    before = (tmp_path / "access.yaml").read_bytes()

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("ollama_agent_router.fsutil.os.replace", disk_full)
    with pytest.raises(HttpError) as e:
        s.mutate(add_key("std"))
    assert e.value.status == 500 and "No space left on device" in e.value.message
    monkeypatch.undo()
    assert s.current.version == 1 and (tmp_path / "access.yaml").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["access.yaml", "access.yaml.lock"]
    assert s.mutate(add_key("std"))[1].version == 2  # the digest still matches: nothing was half-written


def test_stale_temp_files_are_removed_at_start(tmp_path):
    store(tmp_path)
    stale = tmp_path / ".access.yaml.123.abcdef.tmp"
    stale.write_text("version: 99\n")
    store(tmp_path)
    assert not stale.exists()
