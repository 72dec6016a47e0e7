"""Keys, policies and raw HTTP(S) helpers shared by the access and admin tests."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from ollama_agent_router.access.keys import generate_key

# name -> (secret key, stored hash); fresh secrets each run, so a leak test can look for them.
KEYS = {name: generate_key() for name in ("std", "std2", "rt", "both", "extra")}
ADMIN_KEY, ADMIN_HASH = generate_key()
OTHER_ADMIN_KEY, OTHER_ADMIN_HASH = generate_key()


def secret(name: str) -> str:
    return KEYS[name][0]


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def admin_headers(key: str = ADMIN_KEY, **extra: str) -> dict[str, str]:
    return {**bearer(key), **extra}


def plane(enabled: bool = True, require: bool = False, anonymous: str = "allow",
          limit: tuple[int, int] | None = None) -> dict:
    out: dict[str, Any] = {"enabled": enabled, "auth": {"requireApiKey": require, "anonymous": anonymous}}
    if limit:
        out["defaultLimit"] = {"requests": limit[0], "windowSeconds": limit[1]}
    return out


def api_key(name: str, scopes: list[str], **extra: Any) -> dict:
    return {"id": name, "keyHash": KEYS[name][1], "scopes": scopes, **extra}


LOCKED = plane(require=True, anonymous="reject")


def access(*, standalone: dict | None = None, runtime: dict | None = None, keys: list[dict] = (),
           path: str | None = None, admin: dict | None = None) -> dict:
    """An ``access`` config section (override for ``make_config`` / ``stack_factory``)."""
    section: dict[str, Any] = {"managed": {
        "planes": {"standalone": standalone or plane(), "runtimeAgent": runtime or plane()},
        "apiKeys": list(keys),
    }}
    if path is not None:
        section["managedConfigPath"] = path
    if admin is not None:
        section["admin"] = {"enabled": True, "apiKeyHashes": [{"id": "ops", "hash": ADMIN_HASH}, OTHER_ADMIN_HASH],
                            **admin}
    return {"access": section}


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def message(self) -> str:
        return self.json()["error"]["message"]

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.body[:300]!r})"


def request(port: int, method: str, path: str, body: Any = None, headers: dict | None = None, *,
            host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Reply:
    """One request on a fresh connection, over HTTP or (with ``tls``) HTTPS."""
    if tls is not None:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=30, context=tls)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"content-type": "application/json"} if data is not None else {}
    hdrs.update(headers or {})
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
