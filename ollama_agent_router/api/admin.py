"""The admin plane: read and change the managed access policy (``/v1/admin/access/*``).

Shapes and codes follow the original (spec A.10), with these differences: returned keys show only
their hash scheme (``sha256:********``); a PUT must state both planes and the key list in full, so a
partial body can neither open a plane nor wipe the keys (a masked or omitted ``keyHash`` of an existing
key id keeps its stored hash, so GET -> edit -> PUT works); ``If-Match`` works like ``expectedVersion``;
keys can be listed (with when this process last saw each used) and patched. Every call is audited;
changes are fsynced to the audit file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..access.control import changed_keys
from ..access.keys import is_masked, mask_hash
from ..config.access import api_key_to_json, managed_to_json
from ..config.parse import ConfigError, parse_api_key, parse_managed_access
from ..config.schema import PLANES, ApiKey, ManagedAccess
from ..errors import HttpError
from ..http.messages import Request, Response, json_response
from ..jsonutil import iso_ms
from .table import Route, read_json_object

if TYPE_CHECKING:
    from ..app import App

BASE = "/v1/admin/access"
PATCHABLE = ("enabled", "scopes", "limits", "name", "expiresAt")
CLEARABLE = ("limits", "name", "expiresAt")  # null removes them

Outcome = tuple[Response, dict[str, Any]]  # the response, and what the audit record should add


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


def routes(app: "App") -> list[Route]:
    access = app.access

    def mutate(change: Callable[[ManagedAccess], ManagedAccess], expected: list[int]) -> tuple[ManagedAccess, ManagedAccess]:
        assert access.store is not None  # admin.enabled requires managedConfigPath (boot validation)
        old, new = access.store.mutate(change, expected)
        access.apply(new, changed_keys(old, new))
        return old, new

    def audited(action: str, mutation: bool, fn: Callable[[Request, dict[str, str]], Awaitable[Outcome]]):
        async def handler(req: Request, params: dict[str, str]) -> Response:
            principal = req.principal
            fields = dict(action=action, method=req.method, path=req.path[:200], requestId=req.request_id,
                          clientIp=principal.client_ip, principal=principal.key_id, certSubject=principal.subject,
                          target=params.get("id"))
            try:
                response, result = await fn(req, params)
            except HttpError as e:
                access.audit.record(outcome="failure", reason=e.code, detail=e.message[:500],
                                    version=access.policy.version, **fields)
                raise
            access.audit.record(outcome="success", sync=mutation, **{**fields, **result})
            return response

        return handler

    async def get_config(req: Request, params: dict[str, str]) -> Outcome:
        policy = access.policy
        return json_response(200, masked_policy(policy), _etag(policy.version)), {"reason": "config_read"}

    async def put_config(req: Request, params: dict[str, str]) -> Outcome:
        body = await read_json_object(req)
        config = body.get("config")
        if not isinstance(config, dict):
            raise HttpError(400, "Request body must be {\"config\": <access policy>, \"expectedVersion\"?: <int>}",
                            code="invalid_body")
        require_full_policy(config)
        expected = expected_versions(req, body.get("expectedVersion"))

        def change(old: ManagedAccess) -> ManagedAccess:
            return _parse(parse_managed_access, dict(config, apiKeys=_keep_stored_hashes(config["apiKeys"], old)))

        old, new = mutate(change, expected)
        return (json_response(200, masked_policy(new), _etag(new.version)),
                {"reason": "config_updated", "oldVersion": old.version, "newVersion": new.version})

    async def list_keys(req: Request, params: dict[str, str]) -> Outcome:
        policy = access.policy
        keys = []
        for key in policy.api_keys:
            entry = masked_key(key)
            if key.id in access.last_used:  # since this process started
                entry["lastUsedAt"] = iso_ms(access.last_used[key.id])
            keys.append(entry)
        body = {"version": policy.version, "apiKeys": keys}
        return json_response(200, body, _etag(policy.version)), {"reason": "keys_listed"}

    async def add_key(req: Request, params: dict[str, str]) -> Outcome:
        key: ApiKey = _parse(parse_api_key, await read_json_object(req))

        def change(old: ManagedAccess) -> ManagedAccess:
            if any(k.id == key.id for k in old.api_keys):
                raise HttpError(409, f"API key with id '{key.id}' already exists", code="duplicate_key")
            if any(k.key_hash == key.key_hash for k in old.api_keys):
                raise HttpError(409, "Another API key already has this keyHash", code="duplicate_key_hash")
            return replace(old, api_keys=old.api_keys + (key,))

        old, new = mutate(change, expected_versions(req))
        return (json_response(201, masked_key(key), _etag(new.version)),
                {"reason": "key_added", "target": key.id, "oldVersion": old.version, "newVersion": new.version})

    async def update_key(req: Request, params: dict[str, str]) -> Outcome:
        body = await read_json_object(req)
        unknown = sorted(set(body) - set(PATCHABLE))
        nulls = sorted(k for k, v in body.items() if v is None and k not in CLEARABLE)
        if unknown or nulls:
            raise HttpError(400, f"PATCH may set {', '.join(PATCHABLE)} (null clears {', '.join(CLEARABLE)});"
                                 f" refused: {', '.join(unknown + nulls)}", code="invalid_body")
        key_id = params["id"]
        updated: list[ApiKey] = []

        def change(old: ManagedAccess) -> ManagedAccess:
            i = _find(old, key_id)
            raw = api_key_to_json(old.api_keys[i])
            for name, value in body.items():
                if value is None:
                    raw.pop(name, None)
                else:
                    raw[name] = value
            updated.append(_parse(parse_api_key, raw))
            return replace(old, api_keys=old.api_keys[:i] + (updated[0],) + old.api_keys[i + 1:])

        old, new = mutate(change, expected_versions(req))
        return (json_response(200, masked_key(updated[0]), _etag(new.version)),
                {"reason": "key_updated", "oldVersion": old.version, "newVersion": new.version})

    async def revoke_key(req: Request, params: dict[str, str]) -> Outcome:
        key_id = params["id"]
        revoked: list[ApiKey] = []

        def change(old: ManagedAccess) -> ManagedAccess:
            i = _find(old, key_id)
            revoked.append(old.api_keys[i])
            return replace(old, api_keys=old.api_keys[:i] + old.api_keys[i + 1:])

        old, new = mutate(change, expected_versions(req))
        return (json_response(200, {"revoked": masked_key(revoked[0])}, _etag(new.version)),
                {"reason": "key_revoked", "oldVersion": old.version, "newVersion": new.version})

    return [
        Route("GET", f"{BASE}/config", "admin", audited("config.read", False, get_config)),
        Route("PUT", f"{BASE}/config", "admin", audited("config.replace", True, put_config)),
        Route("GET", f"{BASE}/keys", "admin", audited("keys.list", False, list_keys)),
        Route("POST", f"{BASE}/keys", "admin", audited("key.add", True, add_key)),
        Route("PATCH", f"{BASE}/keys/{{id}}", "admin", audited("key.update", True, update_key)),
        Route("DELETE", f"{BASE}/keys/{{id}}", "admin", audited("key.revoke", True, revoke_key)),
    ]
