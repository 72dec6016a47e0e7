"""The admin plane: read and change the managed access policy (``/v1/admin/access/*``).

Shapes and codes follow the original (spec A.10), with these differences: returned keys show only
their hash scheme (``sha256:********``); a PUT must state both planes and the key list in full, so a
partial body can neither open a plane nor wipe the keys (a masked or omitted ``keyHash`` of an existing
key id keeps its stored hash, so GET -> edit -> PUT works); ``If-Match`` works like ``expectedVersion``;
keys can be listed (with when this process last saw each used) and patched. Every call is audited;
a change is on record (fsynced to the audit file) before it is made, and a change whose record cannot be
written (a full or read-only disk) is not made: 503 ``audit_log_unavailable``. Bodies are at most
``MAX_BODY_BYTES`` and a policy from the API at most ``MAX_KEYS`` keys: each change rewrites the whole
managed file, on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Awaitable, Callable

from ..access.audit import AuditLog
from ..access.control import AccessControl, changed_keys
from ..access.keys import is_masked, mask_hash
from ..config.access import api_key_to_json, managed_to_json
from ..config.parse import parse_api_key, parse_managed_access
from ..config.reader import ConfigError
from ..config.schema import PLANES, ApiKey, ManagedAccess
from ..errors import HttpError
from ..http.messages import Request, Response, json_response
from ..jsonutil import iso_ms
from .bodies import read_json_object
from .table import Route

BASE = "/v1/admin/access"
PATCHABLE = ("enabled", "scopes", "limits", "name", "expiresAt")
CLEARABLE = ("limits", "name", "expiresAt")  # null removes them
MAX_BODY_BYTES = 256 * 1024
MAX_KEYS = 200  # each change parses the policy and rewrites the managed file: about 0.1 ms a key

Outcome = tuple[Response, dict[str, Any]]  # the response, and what the audit record of a read should add


@dataclass
class Trail:
    """The audit record of one admin call: its common fields, and whether its success is on record yet."""

    audit: AuditLog
    fields: dict[str, Any]
    recorded: bool = False

    def change(self, **extra: Any) -> None:
        """Put a change on record before it is made; 503 when the record cannot be written."""
        if not self.audit.record(outcome="success", sync=True, **{**self.fields, **extra}):
            raise HttpError(503, "The admin audit log cannot be written, so the change was not made",
                            code="audit_log_unavailable", headers=[("Retry-After", "5")])
        self.recorded = True


def masked_key(key: ApiKey) -> dict[str, Any]:
    out = api_key_to_json(key)
    out["keyHash"] = mask_hash(key.key_hash)
    return out


def masked_policy(policy: ManagedAccess) -> dict[str, Any]:
    out = managed_to_json(policy)
    out["apiKeys"] = [masked_key(k) for k in policy.api_keys]
    return out


def _etag(version: int) -> list[tuple[str, str]]:
    return [("ETag", f'"{version}"')]


def _invalid(e: ConfigError) -> HttpError:
    return HttpError(400, "Invalid access config: " + "; ".join(e.errors), code="invalid_access_config",
                     extra={"details": e.errors})


def _parse(read: Callable[[Any], Any], data: Any) -> Any:
    try:
        return read(data)
    except ConfigError as e:
        raise _invalid(e) from None


def expected_versions(req: Request, body_version: Any = None) -> list[int]:
    """The versions the caller says it is changing: ``expectedVersion`` and/or ``If-Match: "<version>"``."""
    out: list[int] = []
    if body_version is not None:
        if isinstance(body_version, bool) or not isinstance(body_version, int) or body_version < 0:
            raise HttpError(400, "expectedVersion must be an integer >= 0", code="invalid_body")
        out.append(body_version)
    tag = req.headers.get("if-match", "").strip()
    if tag and tag != "*":
        tag = tag.removeprefix("W/").strip('"')
        if not tag.isdigit():
            raise HttpError(400, 'If-Match must be a version ETag such as "3"', code="invalid_if_match")
        out.append(int(tag))
    return out


def require_full_policy(config: dict) -> None:
    """A PUT replaces the policy: anything it leaves out would silently fall back to an open default."""
    missing: list[str] = []
    planes = config.get("planes")
    for name in PLANES:
        plane = planes.get(name) if isinstance(planes, dict) else None
        if not isinstance(plane, dict):
            missing.append(f"config.planes.{name}")
            continue
        if plane.get("enabled") is None:
            missing.append(f"config.planes.{name}.enabled")
        auth = plane.get("auth")
        missing += [f"config.planes.{name}.auth.{f}" for f in ("requireApiKey", "anonymous")
                    if not isinstance(auth, dict) or auth.get(f) is None]
    if config.get("apiKeys") is None:
        missing.append("config.apiKeys")
    elif isinstance(config["apiKeys"], list) and len(config["apiKeys"]) > MAX_KEYS:
        raise HttpError(413, f"config.apiKeys holds {len(config['apiKeys'])} keys; the admin API takes at most "
                             f"{MAX_KEYS}", code="too_many_keys")
    if missing:
        raise HttpError(400, "PUT replaces the whole access policy; missing: " + ", ".join(missing),
                        code="incomplete_config")


def _keep_stored_hashes(entries: Any, old: ManagedAccess) -> Any:
    """Key entries whose ``keyHash`` is omitted or masked take the stored hash of the same id."""
    if not isinstance(entries, list):
        return entries
    stored = {k.id: k.key_hash for k in old.api_keys}
    out = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("id") in stored and (
                entry.get("keyHash") is None or is_masked(entry.get("keyHash"))):
            entry = dict(entry, keyHash=stored[entry["id"]])
        out.append(entry)
    return out


def _find(policy: ManagedAccess, key_id: str) -> int:
    for i, key in enumerate(policy.api_keys):
        if key.id == key_id:
            return i
    raise HttpError(404, f"API key '{key_id[:100]}' not found", code="key_not_found")


class AdminRoutes:
    def __init__(self, access: AccessControl) -> None:
        self.access = access

    def routes(self) -> list[Route]:
        audited = self._audited
        return [
            Route("GET", f"{BASE}/config", "admin", audited("config.read", self.get_config)),
            Route("PUT", f"{BASE}/config", "admin", audited("config.replace", self.put_config)),
            Route("GET", f"{BASE}/keys", "admin", audited("keys.list", self.list_keys)),
            Route("POST", f"{BASE}/keys", "admin", audited("key.add", self.add_key)),
            Route("PATCH", f"{BASE}/keys/{{id}}", "admin", audited("key.update", self.update_key)),
            Route("DELETE", f"{BASE}/keys/{{id}}", "admin", audited("key.revoke", self.revoke_key)),
        ]

    def _audited(self, action: str, fn: Callable[[Request, dict[str, str], Trail], Awaitable[Outcome]]):
        """The handler for ``fn``, with one audit record per call: a change's, written by ``_mutate`` before
        the change is made, or the outcome with what ``fn`` adds."""
        audit = self.access.audit

        async def handler(req: Request, params: dict[str, str]) -> Response:
            principal = req.principal
            trail = Trail(audit, dict(action=action, method=req.method, path=req.path[:200], requestId=req.request_id,
                                      clientIp=principal.client_ip, principal=principal.key_id,
                                      certSubject=principal.subject, target=params.get("id")))
            try:
                response, result = await fn(req, params, trail)
            except HttpError as e:
                audit.record(outcome="failure", reason=e.code, detail=e.message[:500],
                             version=self.access.policy.version, **trail.fields)
                raise
            if not trail.recorded:
                audit.record(outcome="success", **{**trail.fields, **result})
            return response

        return handler

    def _mutate(self, trail: Trail, change: Callable[[ManagedAccess], ManagedAccess], expected: list[int],
                reason: str, target: str | None = None) -> tuple[ManagedAccess, ManagedAccess]:
        store = self.access.store
        assert store is not None  # admin.enabled requires managedConfigPath (boot validation)

        def record(old: ManagedAccess, new: ManagedAccess) -> None:
            trail.change(reason=reason, oldVersion=old.version, newVersion=new.version,
                         **({"target": target} if target else {}))

        old, new = store.mutate(change, expected, record)
        self.access.apply(new, changed_keys(old, new))
        return old, new

    async def get_config(self, req: Request, params: dict[str, str], trail: Trail) -> Outcome:
        policy = self.access.policy
        return json_response(200, masked_policy(policy), _etag(policy.version)), {"reason": "config_read"}

    async def put_config(self, req: Request, params: dict[str, str], trail: Trail) -> Outcome:
        body = await read_json_object(req, limit=MAX_BODY_BYTES)
        config = body.get("config")
        if not isinstance(config, dict):
            raise HttpError(400, "Request body must be {\"config\": <access policy>, \"expectedVersion\"?: <int>}",
                            code="invalid_body")
        require_full_policy(config)
        expected = expected_versions(req, body.get("expectedVersion"))

        def change(old: ManagedAccess) -> ManagedAccess:
            return _parse(parse_managed_access, dict(config, apiKeys=_keep_stored_hashes(config["apiKeys"], old)))

        _, new = self._mutate(trail, change, expected, "config_updated")
        return json_response(200, masked_policy(new), _etag(new.version)), {}

    async def list_keys(self, req: Request, params: dict[str, str], trail: Trail) -> Outcome:
        policy = self.access.policy
        last_used = self.access.last_used  # since this process started
        keys = []
        for key in policy.api_keys:
            entry = masked_key(key)
            if key.id in last_used:
                entry["lastUsedAt"] = iso_ms(last_used[key.id])
            keys.append(entry)
        body = {"version": policy.version, "apiKeys": keys}
        return json_response(200, body, _etag(policy.version)), {"reason": "keys_listed"}

    async def add_key(self, req: Request, params: dict[str, str], trail: Trail) -> Outcome:
        key: ApiKey = _parse(parse_api_key, await read_json_object(req, limit=MAX_BODY_BYTES))

        def change(old: ManagedAccess) -> ManagedAccess:
            if len(old.api_keys) >= MAX_KEYS:
                raise HttpError(409, f"The policy holds {len(old.api_keys)} keys, the most the admin API adds to",
                                code="too_many_keys")
            if any(k.id == key.id for k in old.api_keys):
                raise HttpError(409, f"API key with id '{key.id}' already exists", code="duplicate_key")
            if any(k.key_hash == key.key_hash for k in old.api_keys):
                raise HttpError(409, "Another API key already has this keyHash", code="duplicate_key_hash")
            return replace(old, api_keys=old.api_keys + (key,))

        _, new = self._mutate(trail, change, expected_versions(req), "key_added", key.id)
        return json_response(201, masked_key(key), _etag(new.version)), {}

    async def update_key(self, req: Request, params: dict[str, str], trail: Trail) -> Outcome:
        body = await read_json_object(req, limit=MAX_BODY_BYTES)
        unknown = sorted(set(body) - set(PATCHABLE))
        nulls = sorted(k for k, v in body.items() if v is None and k not in CLEARABLE)
        if unknown or nulls:
            raise HttpError(400, f"PATCH may set {', '.join(PATCHABLE)} (null clears {', '.join(CLEARABLE)});"
                                 f" refused: {', '.join(unknown + nulls)}", code="invalid_body")
        key_id = params["id"]

        def change(old: ManagedAccess) -> ManagedAccess:
            i = _find(old, key_id)
            raw = api_key_to_json(old.api_keys[i])
            for name, value in body.items():
                if value is None:
                    raw.pop(name, None)
                else:
                    raw[name] = value
            return replace(old, api_keys=old.api_keys[:i] + (_parse(parse_api_key, raw),) + old.api_keys[i + 1:])

        _, new = self._mutate(trail, change, expected_versions(req), "key_updated")
        updated = new.api_keys[_find(new, key_id)]
        return json_response(200, masked_key(updated), _etag(new.version)), {}

    async def revoke_key(self, req: Request, params: dict[str, str], trail: Trail) -> Outcome:
        key_id = params["id"]

        def change(old: ManagedAccess) -> ManagedAccess:
            i = _find(old, key_id)
            return replace(old, api_keys=old.api_keys[:i] + old.api_keys[i + 1:])

        old, new = self._mutate(trail, change, expected_versions(req), "key_revoked")
        revoked = old.api_keys[_find(old, key_id)]
        return json_response(200, {"revoked": masked_key(revoked)}, _etag(new.version)), {}
