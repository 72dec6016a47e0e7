"""Who may call which plane, decided from the request headers alone (the body is not read yet).

Planes: ``None`` (always open), ``standalone``, ``runtimeAgent``, ``jobs`` (the job routes both public
planes share), ``admin`` and ``metrics``. Messages and status codes are the original's (spec A.11);
the policy differs where the original was unsafe:
- a key that is present but unknown, expired or disabled is 401, never a fallback to anonymous, and
  so is an ``Authorization`` header that carries no usable key; only with no keys configured at all
  are presented keys ignored (SDKs always send one);
- job routes take the most restrictive policy of the enabled planes, and jobs are owned;
- anonymous callers are limited per client address, not in one shared bucket;
- failed authentications are limited per client address on every plane;
- the admin plane checks address, then certificate, then key, so a caller without a certificate
  learns nothing about keys;
- salted keys (pbkdf2, scrypt) are derived off the event loop, a few at a time, and only for a client
  address that has not used up its failed authentications.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import NoReturn

from ..config.reader import ConfigError
from ..config.schema import PLANES, ApiKey, Config, ManagedAccess, PlaneConfig, TrafficLimit
from ..errors import HttpError, not_found
from ..http.messages import Request
from ..jsonutil import parse_iso
from ..log import Logger
from ..metrics import Metrics
from .audit import AuditLog, DenialLog
from .kdf import Deriver
from .keys import UNUSABLE, KeyEntry, KeyIndex, Unusable, extract_credential
from .managed import ManagedStore
from .netaddr import LOOPBACK_PROXIES, AddressSet, Client, ClientResolver, is_loopback
from .principal import Principal
from .ratelimit import RateLimiter
from .tlsauth import CertPolicy, parse_subject_pattern, peer_cert

FAILURE_LIMIT = TrafficLimit(requests=10, window_seconds=60)  # failed authentications per client address
ADMIN_LIMIT = TrafficLimit(requests=600, window_seconds=60)  # admin requests per admin key
AUDIT_FILE = "access-audit.jsonl"


@dataclass(frozen=True)
class _Key:
    api: ApiKey
    expires: float | None  # epoch seconds


def _anonymous_allowed(plane: PlaneConfig) -> bool:
    return not plane.auth.require_api_key and plane.auth.anonymous != "reject"


def _rate(limit: TrafficLimit | None) -> float:
    return limit.requests / limit.window_seconds if limit else float("inf")


@dataclass(frozen=True)
class _Gate:
    """What a route's plane admits (for job routes: both public planes together), worked out per policy."""

    candidates: tuple[str, ...]
    enabled: tuple[str, ...]  # the enabled candidates, in the original's order
    anonymous: bool  # every enabled candidate admits anonymous callers: the most restrictive policy wins
    anon_plane: str  # the plane anonymous callers are charged to: the one with the tightest limit
    anon_limit: TrafficLimit | None


def _gate(planes: dict[str, PlaneConfig], candidates: tuple[str, ...]) -> _Gate:
    enabled = tuple(p for p in candidates if planes[p].enabled)
    anon_plane = min(enabled or candidates, key=lambda p: _rate(planes[p].default_limit))
    return _Gate(candidates, enabled, all(_anonymous_allowed(planes[p]) for p in enabled), anon_plane,
                 planes[anon_plane].default_limit)


def changed_keys(old: ManagedAccess, new: ManagedAccess) -> set[str]:
    """Ids of the keys added, removed or changed between two policies."""
    before = {k.id: k for k in old.api_keys}
    after = {k.id: k for k in new.api_keys}
    return {i for i in before.keys() | after.keys() if before.get(i) != after.get(i)}


class AccessControl:
    def __init__(self, cfg: Config, *, log: Logger | None = None, metrics: Metrics | None = None,
                 failure_limit: TrafficLimit = FAILURE_LIMIT, denial_log_interval: float = 10.0) -> None:
        access, admin = cfg.access, cfg.access.admin
        self.cfg = cfg
        self.log = log or Logger("info")
        self.metrics = metrics or Metrics((), ())
        self.present = access.present
        self.failure_limit = failure_limit
        self.limiter = RateLimiter()
        self.deriver = Deriver()
        self.last_used: dict[str, float] = {}  # key id -> epoch seconds, in memory only
        self.denials = DenialLog(self.log, denial_log_interval)
        # A bare `trustedProxy: true` trusts only a proxy on this host; anything else must be listed.
        self.client = ClientResolver(
            AddressSet(admin.trusted_proxies or (LOOPBACK_PROXIES if admin.trusted_proxy else ())))
        self.admin_ips = AddressSet(admin.allowed_ips)
        try:
            subjects = tuple(parse_subject_pattern(s) for s in admin.client_cert.allowed_subjects)
        except ValueError as e:
            raise ConfigError(f"access.admin.clientCert.{e}") from None
        self.cert_policy = CertPolicy(frozenset(admin.client_cert.allowed_fingerprints), subjects)
        self.admin_keys: KeyIndex[None] = KeyIndex(
            KeyEntry(k.id or f"admin-key-{i}", k.hash, None) for i, k in enumerate(admin.api_key_hashes, 1)
        )
        path = access.managed_config_path
        self.store = ManagedStore(path, access.managed, bootstrap=access.bootstrap_if_missing) if path else None
        audit_path = admin.audit_log_path or (os.path.join(os.path.dirname(path), AUDIT_FILE) if path else None)
        self.audit = AuditLog(audit_path, self.log, enabled=admin.enabled and admin.audit_log)
        self.apply(self.store.current if self.store else access.managed)

    # ---- policy --------------------------------------------------------------------------------
    def apply(self, policy: ManagedAccess, touched: set[str] = frozenset()) -> None:
        """Make ``policy`` the one in force; forget the rate-limit buckets of the keys in ``touched``."""
        self.policy = policy
        self.keys: KeyIndex[_Key] = KeyIndex(
            KeyEntry(k.id, k.key_hash, _Key(k, parse_iso(k.expires_at) if k.expires_at else None))
            for k in policy.api_keys if k.enabled
        )
        # With no keys at all nothing can be checked: presented keys are ignored (SDKs always send one).
        self.has_keys = bool(policy.api_keys)
        planes = policy.planes
        self.gates = {name: _gate(planes, (name,)) for name in PLANES}
        self.gates["jobs"] = _gate(planes, PLANES)
        self.runtime_enabled = planes["runtimeAgent"].enabled
        ids = {k.id for k in policy.api_keys}
        self.last_used = {i: t for i, t in self.last_used.items() if i in ids}
        if touched:
            users = {f"key:{i}" for i in touched}
            self.limiter.reset(lambda bucket: bucket[1] in users)

    def reload(self) -> None:
        """Re-read the managed file (SIGHUP). A broken file is reported and the current policy kept."""
        if self.store is None:
            self.log.warning("access_reload_skipped", reason="no access.managedConfigPath")
            return
        old = self.policy
        try:
            new = self.store.reload()
        except ConfigError as e:
            self.log.error("access_reload_failed", path=self.store.path, error=str(e))
            return
        for warning in self.store.warnings:  # unknown keys: the file is used, as at start
            self.log.warning("config_warning", message=warning)
        self.apply(new, changed_keys(old, new))
        self.audit.record(outcome="success", reason="config_reloaded", action="config.reload", principal="SIGHUP",
                          oldVersion=old.version, newVersion=new.version, sync=True)
        self.log.info("access_reloaded", path=self.store.path, version=new.version)

    def announce(self, host: str) -> None:
        """Say at start which policy is in force, and warn loudly about anonymous planes on a public bind."""
        if not self.present:
            source = "none (no access section: standalone and runtimeAgent are open)"
        elif self.store is None:
            source = "inline access.managed"
        else:
            source = f"file {self.store.path}"
        admin = self.cfg.access.admin
        self.log.info("access_policy", source=source, version=self.policy.version, apiKeys=len(self.policy.api_keys),
                      adminEnabled=admin.enabled, auditLog=self.audit.path if self.audit.enabled else False)
        if is_loopback(host):
            return
        for name, plane in self.policy.planes.items():
            if plane.enabled and _anonymous_allowed(plane):
                self.log.warning("access_anonymous_plane_exposed", plane=name, host=host,
                                 limit=f"{plane.default_limit.requests}/{plane.default_limit.window_seconds}s"
                                 if plane.default_limit else "none",
                                 message=f"the {name} plane accepts anonymous callers on a non-loopback address")

    def close(self) -> None:
        self.denials.close()
        self.deriver.close()

    # ---- decisions -----------------------------------------------------------------------------
    async def authorize(self, req: Request, plane: str | None) -> Principal:
        if plane is None:
            return Principal(None, None, req.client_ip)
        if plane == "admin":
            return await self._admin(req)
        if plane == "metrics":
            return await self._metrics(req)
        if not self.present:
            return Principal("standalone" if plane == "jobs" else plane, None, req.client_ip, all_jobs=True)
        return await self._public(req, self.gates[plane])

    async def _public(self, req: Request, gate: _Gate) -> Principal:
        if not gate.enabled:
            self._deny(req, gate.candidates[0], "plane_disabled", not_found())
        client = self.client(req.client_ip, req.headers)
        cred = extract_credential(req.headers)
        if cred is not None and not self.has_keys and gate.anonymous:
            cred = None
        if cred is None:
            if not gate.anonymous:
                self._deny(req, gate.enabled[0], "api_key_required",
                           HttpError(401, "API key required", code="api_key_required"))
            principal = Principal(gate.anon_plane, None, client.ip)
            self._limit(req, gate.anon_plane, "ip:" + client.bucket, gate.anon_limit, "anonymous")
            return principal
        key = await self._verify(req, gate.enabled[0], cred, client)
        for plane in gate.enabled:
            if plane in key.scopes:
                break
        else:
            self._deny(req, gate.enabled[0], "scope_denied",
                       HttpError(403, "API key is not allowed for this plane", code="scope_denied"), key.id)
        principal = Principal(plane, key.id, client.ip,
                              all_jobs=self.runtime_enabled and "runtimeAgent" in key.scopes)
        self._limit(req, plane, principal.user, key.limits.get(plane) or self.policy.planes[plane].default_limit,
                    key.id)
        return principal

    async def _verify(self, req: Request, plane: str, cred: str | Unusable, client: Client) -> ApiKey:
        """The enabled, unexpired key ``cred`` names; 401 otherwise, and repeated failures are limited."""
        failures = ("auth-failures", client.bucket)
        self._refuse_if_failing(req, plane, failures)
        entry = await self._find_key(cred, client.bucket) if isinstance(cred, str) else None
        now = time.time()
        if entry is not None and (entry.item.expires is None or now < entry.item.expires):
            self.last_used[entry.id] = now
            return entry.item.api
        self.limiter.check(failures, self.failure_limit)
        reason = "invalid_authorization_header" if cred is UNUSABLE else "invalid_api_key"
        self._deny(req, plane, reason, HttpError(401, "Invalid API key", code="invalid_api_key"))

    async def _find_key(self, cred: str, client: str) -> KeyEntry[_Key] | None:
        """The policy's entry for ``cred``, in the policy in force once any derivation has finished."""
        while True:
            index = self.keys
            entry = await index.lookup(cred, self.deriver, client)
            if index is self.keys:
                return entry

    def _refuse_if_failing(self, req: Request, plane: str, failures: tuple[str, str]) -> None:
        """429 for a client address with too many recent failed authentications; no key is even looked at."""
        blocked = self.limiter.blocked(failures, self.failure_limit)
        if blocked is not None:
            self._deny(req, plane, "too_many_auth_failures", HttpError(
                429, "Too many failed authentication attempts", code="auth_rate_limited",
                headers=[("Retry-After", str(max(1, math.ceil(blocked.retry_after))))]))

    def _limit(self, req: Request, plane: str, user: str, limit: TrafficLimit | None, who: str) -> None:
        if limit is None:
            return
        decision = self.limiter.check((plane, user), limit)
        headers = decision.headers(time.time())
        if decision.allowed:
            # The front gate puts these on whatever response follows, errors included.
            req.extra_headers.extend(headers)
            return
        self.metrics.refused_by_rate_limit(plane)
        self._deny(req, plane, "rate_limited",
                   HttpError(429, "Rate limit exceeded", code="rate_limit_exceeded", headers=headers), who)

    def _deny(self, req: Request, plane: str, reason: str, err: HttpError, principal: str | None = None) -> NoReturn:
        if reason != "rate_limited":
            self.metrics.auth_denials.inc(plane, reason)
        self.denials.denied(plane, reason, method=req.method, path=req.path[:200], principal=principal,
                            client=req.client_ip, requestId=req.request_id)
        raise err

    async def _metrics(self, req: Request) -> Principal:
        """``metrics.requireApiKey``: a key with the runtimeAgent scope; otherwise open, like the original."""
        if not self.cfg.metrics.require_api_key:
            return Principal("metrics", None, req.client_ip)
        cred = extract_credential(req.headers)
        if cred is None:
            self._deny(req, "metrics", "api_key_required", HttpError(401, "API key required", code="api_key_required"))
        client = self.client(req.client_ip, req.headers)
        key = await self._verify(req, "metrics", cred, client)
        if "runtimeAgent" not in key.scopes:
            self._deny(req, "metrics", "scope_denied",
                       HttpError(403, "API key is not allowed for this plane", code="scope_denied"), key.id)
        return Principal("metrics", key.id, client.ip)

    async def _admin(self, req: Request) -> Principal:
        """Address, then client certificate, then key: each refusal is audited and counts as a failure."""
        admin = self.cfg.access.admin
        if not admin.enabled:
            raise not_found()  # the same JSON 404 as any unknown route
        client = self.client(req.client_ip, req.headers)
        ip = client.ip
        failures = ("auth-failures", client.bucket)
        self._refuse_if_failing(req, "admin", failures)
        cert = peer_cert(req.tls)
        subject = cert.subject_text() if cert else None

        def refuse(status: int, message: str, reason: str, code: str) -> NoReturn:
            self.limiter.check(failures, self.failure_limit)
            self.metrics.auth_denials.inc("admin", reason)
            self.audit.record(outcome="denied", reason=reason, action="access", method=req.method,
                              path=req.path[:200], requestId=req.request_id, clientIp=ip, certSubject=subject)
            raise HttpError(status, message, code=code)

        if client.addr not in self.admin_ips:
            refuse(403, "Admin plane access denied", "ip_not_allowed", "admin_access_denied")
        if admin.client_cert.required and not self.cert_policy.accepts(cert):
            refuse(403, "Trusted client certificate required", "client_cert_required_or_untrusted",
                   "client_cert_required")
        cred = extract_credential(req.headers)
        entry = await self.admin_keys.lookup(cred, self.deriver, client.bucket) if isinstance(cred, str) else None
        if entry is None:
            refuse(401, "Admin authentication required", "invalid_admin_key", "admin_auth_required")
        decision = self.limiter.check(("admin", entry.id), ADMIN_LIMIT)
        if not decision.allowed:
            self.metrics.refused_by_rate_limit("admin")
            self.audit.record(outcome="denied", reason="rate_limited", action="access", method=req.method,
                              path=req.path[:200], requestId=req.request_id, clientIp=ip, principal=entry.id,
                              certSubject=subject)
            raise HttpError(429, "Rate limit exceeded", code="rate_limit_exceeded",
                            headers=decision.headers(time.time()))
        return Principal("admin", entry.id, ip, subject=subject)
