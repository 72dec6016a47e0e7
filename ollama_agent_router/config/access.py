"""Schema of the ``access`` section: the managed policy (planes, API keys, limits) and the boot-only admin plane.

The readers take a ``reader.Section`` and record problems on it; ``reader`` owns YAML and errors.
The managed policy is also the content of the managed access file and of admin PUT bodies.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, timezone
from typing import Any

from .reader import Section
from .schema import (
    PLANES,
    AccessConfig,
    AdminConfig,
    AdminKey,
    ApiKey,
    ClientCertConfig,
    ManagedAccess,
    PlaneAuth,
    PlaneConfig,
    TrafficLimit,
    to_json,
)

ANONYMOUS_MODES = ("allow", "reject", "limited")
HASH_FORMATS = (
    "sha256:<64 hex chars>, pbkdf2-sha256:<iterations>:<salt hex>:<hash hex>"
    " or scrypt:<n>:<r>:<p>:<salt hex>:<hash hex>"
)
# A hash that is not one (the examples' `sha256:REPLACE-...` placeholders) says how to make a real one.
_HASH_HINT = "; run `oar gen-key` for a new key and its hash, or `oar hash-key` to hash a key you already have"
_KEY_ID = re.compile(r"[a-zA-Z0-9._:-]+")
_HEX = r"((?:[0-9a-f]{2})+)"
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}", re.IGNORECASE)
_PBKDF2 = re.compile(rf"pbkdf2-sha256:[1-9][0-9]*:{_HEX}:{_HEX}", re.IGNORECASE)
_SCRYPT = re.compile(rf"scrypt:([1-9][0-9]*):[1-9][0-9]*:[1-9][0-9]*:{_HEX}:{_HEX}", re.IGNORECASE)
_ISO_UTC = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?Z")
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


def normalize_key_hash(value: Any) -> str:
    """A stored key hash in one of the accepted formats, lower-cased. Only the syntax is checked here."""
    if isinstance(value, str):
        scrypt = _SCRYPT.fullmatch(value)
        n = int(scrypt[1]) if scrypt else 0
        # scrypt's cost parameter must be a power of two greater than 1.
        if _SHA256.fullmatch(value) or _PBKDF2.fullmatch(value) or (scrypt and n > 1 and n & (n - 1) == 0):
            return value.lower()
    raise ValueError(f"must use {HASH_FORMATS}{_HASH_HINT}")


def _key_hash(value: Any) -> str:
    try:
        return normalize_key_hash(value)
    except ValueError:
        raise ValueError(f"keyHash must use {HASH_FORMATS}{_HASH_HINT}") from None


def _key_id(value: Any) -> str:
    if not isinstance(value, str) or not _KEY_ID.fullmatch(value):
        raise ValueError("api key id may contain only letters, numbers, dots, underscores, colons, and dashes")
    return value


def iso_utc(value: Any) -> str:
    """An ISO-8601 UTC timestamp ending in ``Z``. YAML 1.1 readers hand us a datetime: convert it back."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    match = _ISO_UTC.fullmatch(value) if isinstance(value, str) else None
    if match:
        try:
            datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%S")
            return value
        except ValueError:
            pass
    raise ValueError("must be an ISO-8601 UTC timestamp ending in Z, such as 2026-01-31T12:00:00.000Z")


def _ip_or_network(value: str) -> str:
    """An address (``127.0.0.1``, ``::1``) or a network (``10.0.0.0/8``), in canonical form."""
    try:
        return str(ipaddress.ip_network(value, strict=False) if "/" in value else ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"must be an IP address or a CIDR network, got {value!r}") from None


def _network(value: str) -> str:
    return str(ipaddress.ip_network(_ip_or_network(value), strict=False))


def _fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint, stored as 64 lower-case hex digits without colons."""
    digits = value.replace(":", "").lower()
    if not _FINGERPRINT.fullmatch(digits):
        raise ValueError("must be a SHA-256 certificate fingerprint (64 hex digits, colons allowed)")
    return digits


def _scope(value: str) -> str:
    if value not in PLANES:
        raise ValueError(f"must be one of {', '.join(PLANES)}")
    return value


def read_limit(s: Section) -> TrafficLimit:
    return TrafficLimit(
        requests=s.integer("requests", gt=0),
        window_seconds=s.integer("windowSeconds", gt=0),
    )


def read_plane(s: Section) -> PlaneConfig:
    auth = s.section("auth")
    plane = s.build(
        PlaneConfig,
        enabled=s.boolean("enabled", None),
        auth=s.build(
            PlaneAuth,
            require_api_key=auth.boolean("requireApiKey", None),
            anonymous=auth.choice("anonymous", ANONYMOUS_MODES, None),
        ),
        default_limit=read_limit(s.section("defaultLimit")) if s.has("defaultLimit") else None,
    )
    if plane.auth.anonymous == "limited" and plane.default_limit is None:
        auth.fail("anonymous", "limited needs a defaultLimit on this plane (the limit for anonymous callers)")
    return plane


def read_api_key(s: Section) -> ApiKey:
    limits = s.section("limits")
    if not s.has("scopes"):
        s.fail("scopes", "is required")
    elif s.raw("scopes") == []:
        s.fail("scopes", f"must name at least one of {', '.join(PLANES)}")
    return s.build(
        ApiKey,
        id=s.get("id", _key_id),
        name=s.text("name", None),
        key_hash=s.get("keyHash", _key_hash),
        enabled=s.boolean("enabled", None),
        scopes=s.strings("scopes", None, check=_scope),
        limits={plane: read_limit(limits.section(plane)) for plane in PLANES if limits.has(plane)},
        expires_at=s.get("expiresAt", iso_utc, None),
    )


def read_managed(s: Section) -> ManagedAccess:
    planes = s.section("planes")
    key_sections = s.sections("apiKeys")
    keys = [read_api_key(k) for k in key_sections]
    seen_ids: set[str] = set()
    seen_hashes: set[str] = set()
    for section, key in zip(key_sections, keys):
        if key.id is not None and key.id in seen_ids:
            section.fail("id", f"duplicate API key id {key.id!r}")
        if key.key_hash is not None and key.key_hash in seen_hashes:
            section.fail("keyHash", "the same hash is already used by another API key")
        seen_ids.add(key.id)
        seen_hashes.add(key.key_hash)
    return s.build(
        ManagedAccess,
        version=s.integer("version", None, ge=0),
        updated_at=s.get("updatedAt", iso_utc, None),
        planes={name: read_plane(planes.section(name)) for name in PLANES},
        api_keys=tuple(keys),
    )


def _read_admin_keys(s: Section) -> tuple[AdminKey, ...] | None:
    """``apiKeyHashes`` entries: a bare hash, or ``{id, hash}`` so that audit records can name the admin."""
    entries = s.items("apiKeyHashes", required=False)
    if entries is None:
        return None
    keys: list[AdminKey] = []
    for path, item in entries:
        if isinstance(item, dict):
            entry = s.child(path, item)
            key = s.build(AdminKey, hash=entry.get("hash", normalize_key_hash), id=entry.get("id", _key_id, None))
            if key.id is not None and any(k.id == key.id for k in keys):
                entry.fail("id", f"duplicate admin key id {key.id!r}")
        else:
            key = AdminKey(hash=s.item(path, item, normalize_key_hash))
        keys.append(key)
    return tuple(keys)


def read_admin(s: Section, base_dir: str) -> AdminConfig:
    cert = s.section("clientCert")
    return s.build(
        AdminConfig,
        enabled=s.boolean("enabled", None),
        allowed_ips=s.strings("allowedIps", None, check=_ip_or_network),
        trusted_proxy=s.boolean("trustedProxy", None),
        trusted_proxies=s.strings("trustedProxies", None, check=_network),
        api_key_hashes=_read_admin_keys(s),
        client_cert=s.build(
            ClientCertConfig,
            required=cert.boolean("required", None),
            allowed_fingerprints=cert.strings("allowedFingerprints", None, check=_fingerprint),
            allowed_subjects=cert.strings("allowedSubjects", None),
        ),
        audit_log=s.boolean("auditLog", None),
        audit_log_path=s.resolve(base_dir, "auditLogPath"),
    )


def read_access(s: Section, base_dir: str, *, present: bool) -> AccessConfig:
    return s.build(
        AccessConfig,
        present=present,
        managed_config_path=s.resolve(base_dir, "managedConfigPath"),
        bootstrap_if_missing=s.boolean("bootstrapIfMissing", None),
        managed=read_managed(s.section("managed")),
        admin=read_admin(s.section("admin"), base_dir),
    )


def api_key_to_json(key: ApiKey) -> dict[str, Any]:
    """One API key as the admin API and the managed file show it (the original's key order, no nulls)."""
    out: dict[str, Any] = {"id": key.id}
    if key.name is not None:
        out["name"] = key.name
    out.update(keyHash=key.key_hash, enabled=key.enabled, scopes=list(key.scopes))
    if key.limits:
        out["limits"] = {plane: to_json(limit) for plane, limit in key.limits.items()}
    if key.expires_at is not None:
        out["expiresAt"] = key.expires_at
    return out


def managed_to_json(m: ManagedAccess) -> dict[str, Any]:
    """The managed policy in the original's key order: version, planes, apiKeys, updatedAt."""
    out: dict[str, Any] = {
        "version": m.version,
        "planes": {name: to_json(plane) for name, plane in m.planes.items()},
        "apiKeys": [api_key_to_json(key) for key in m.api_keys],
    }
    if m.updated_at is not None:
        out["updatedAt"] = m.updated_at
    return out
