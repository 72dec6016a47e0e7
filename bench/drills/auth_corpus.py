"""Hostile auth corpus: every route x access policy x key state, XFF spoofing, mapped IPv6, DN look-alikes.

    python bench/drills/auth_corpus.py

The corpus is generated from the live route table (``app.routes``), so a new route is covered the day it
is added. Each request is judged against an oracle written here from the access rules (spec A.11 and
the policy notes in ``access/control.py``), not by calling the access code, and against what the
instrumented router actually did: the plane ``authorize`` was asked about and whether it admitted.

- Key states: none, wrong, other scope, disabled, expired, right; presented as ``Authorization: Bearer``
  or ``x-api-key`` in turn. Policies: both public planes locked, anonymous standalone, runtimeAgent
  disabled, standalone disabled with an open runtimeAgent; ``metrics.requireApiKey`` on and off.
- Client addresses: every request comes through a trusted proxy (127.0.0.1) with its own
  ``X-Forwarded-For``, so the per-address failure limit never blurs the corpus; the XFF cases then try
  spoofing from an untrusted peer (127.0.0.3), hop order, IPv4-mapped and hex IPv6 forms, ports,
  zone ids and junk against the admin allowlist.
- Rate-limit evasion: rotating XFF from an untrusted peer does not buy more than the anonymous limit.
- Client certificates: subjects that contain the allowed one as a substring (``CN=kong-evil``,
  ``CN=xkong``, ``O=Execon Evil``, a CN holding ``kong,O=Execon``) and a certificate from another CA.

Figure: accepted-but-should-deny and denied-but-should-accept, both 0.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import drillkit
from drillkit import Reached, exchange

from ollama_agent_router.access.keys import generate_key
from ollama_agent_router.api.ollama import MANAGEMENT

# Handlers that refuse every request with a 403 of their own once access control has let it in: the model
# management routes, which the router does not expose (their 403 says why).
REFUSING = frozenset(f"{method} {path}" for method, path in MANAGEMENT)

PUBLIC = ("standalone", "runtimeAgent")
STATES = ("none", "wrong", "other", "disabled", "expired", "right")


@dataclass(frozen=True)
class Policy:
    name: str
    planes: dict[str, dict]  # plane -> {"enabled", "require", "anonymous"}
    metrics_require: bool


def _plane(enabled: bool = True, anonymous: bool = False) -> dict:
    return {"enabled": enabled, "auth": {"requireApiKey": not anonymous, "anonymous": "allow" if anonymous else "reject"}}


POLICIES = [
    Policy("locked", {"standalone": _plane(), "runtimeAgent": _plane()}, True),
    Policy("anonymous standalone", {"standalone": _plane(anonymous=True), "runtimeAgent": _plane()}, False),
    Policy("runtimeAgent disabled", {"standalone": _plane(), "runtimeAgent": _plane(enabled=False)}, True),
    Policy("standalone disabled, runtimeAgent open",
           {"standalone": _plane(enabled=False), "runtimeAgent": _plane(anonymous=True)}, False),
]

# Fresh keys each run: name -> (secret, hash).
KEYS = {name: generate_key() for name in ("std", "rt", "off", "old", "admin")}
ADMIN_NETS = ["10.9.0.0/16", "::ffff:10.8.8.8", "2001:db8::/64"]


def policy_override(policy: Policy, tmp: Path) -> dict:
    keys = [
        {"id": "std", "keyHash": KEYS["std"][1], "scopes": ["standalone"]},
        {"id": "rt", "keyHash": KEYS["rt"][1], "scopes": ["runtimeAgent"]},
        {"id": "off", "keyHash": KEYS["off"][1], "scopes": list(PUBLIC), "enabled": False},
        {"id": "old", "keyHash": KEYS["old"][1], "scopes": list(PUBLIC), "expiresAt": "2020-01-01T00:00:00Z"},
    ]
    return {
        "access": {
            "managedConfigPath": str(tmp / f"access-{policy.name.replace(' ', '-').replace(',', '')}.yaml"),
            "managed": {"planes": policy.planes, "apiKeys": keys},
            "admin": {"enabled": True, "apiKeyHashes": [{"id": "ops", "hash": KEYS["admin"][1]}],
                      "allowedIps": ADMIN_NETS, "trustedProxies": ["127.0.0.1/32"]},
        },
        "metrics": {"requireApiKey": policy.metrics_require},
    }


# ---- the oracle ------------------------------------------------------------------------------------------

def candidates(plane: str) -> tuple[str, ...]:
    return PUBLIC if plane == "jobs" else (plane,)


def should_admit(policy: Policy, plane: str | None, state: str) -> bool:
    """The access rules, restated: who gets past ``authorize`` for a route on ``plane``."""
    if plane is None:
        return True
    if plane == "admin":
        return state == "right"
    if plane == "metrics":
        return not policy.metrics_require or state == "right"
    enabled = [p for p in candidates(plane) if policy.planes[p]["enabled"]]
    if not enabled:
        return False  # a disabled plane looks like a missing route
    if state == "none":
        return all(policy.planes[p]["auth"]["anonymous"] == "allow" and not policy.planes[p]["auth"]["requireApiKey"]
                   for p in enabled)
    return state == "right"  # a key that is presented must be valid, enabled, unexpired and in scope


def key_for(policy: Policy, plane: str | None, state: str) -> str | None:
    """The credential a key state stands for on a route's plane (None: send none)."""
    if state == "none":
        return None
    if state == "wrong":
        return generate_key()[0]
    if state == "disabled":
        return KEYS["off"][0]
    if state == "expired":
        return KEYS["old"][0]
    enabled = [p for p in PUBLIC if policy.planes[p]["enabled"]]
    scoped = {"standalone": "std", "runtimeAgent": "rt"}
    if plane == "admin":
        right, other = "admin", "rt"
    elif plane == "metrics":
        right, other = "rt", "std"
    elif plane == "jobs":
        right = scoped[enabled[0]] if enabled else "std"
        # Another scope: a key for a disabled plane, or (both enabled) an admin key, which is no API key.
        other = next((scoped[p] for p in PUBLIC if p not in enabled), "admin")
    elif plane in scoped:
        right, other = scoped[plane], scoped["runtimeAgent" if plane == "standalone" else "standalone"]
    else:
        right, other = "std", "rt"
    return KEYS[right if state == "right" else other][0]


# ---- requests --------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    label: str
    should: bool
    admitted: bool | None  # None: authorize was never asked
    status: int
    plane_asked: str | None
    handler: str | None

    @property
    def wrong(self) -> str:
        if self.admitted is None:
            return "access never consulted"
        if self.admitted and not self.should:
            return "accepted, should deny"
        if not self.admitted and self.should:
            return "denied, should accept"
        if not self.admitted and self.status not in (0, 401, 403, 404, 429):  # 0: refused in the TLS handshake
            return f"denied with status {self.status}"
        if self.admitted and self.status in (401, 403) and not (self.status == 403 and self.handler in REFUSING):
            return f"admitted, yet answered {self.status}"
        return ""


@dataclass
class Corpus:
    outcomes: list[Outcome] = field(default_factory=list)

    def add(self, o: Outcome) -> None:
        self.outcomes.append(o)

    @property
    def wrong(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.wrong]


def raw_request(method: str, path: str, *, key: str | None, key_header: str, xff: list[str] | None,
                body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    if key is not None:
        lines.append(f"Authorization: Bearer {key}" if key_header == "bearer" else f"x-api-key: {key}")
    for value in xff or ():
        lines.append(f"X-Forwarded-For: {value}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def send(stack: Any, reached: Reached, method: str, path: str, *, key: str | None = None, key_header: str = "bearer",
         xff: list[str] | None = None, source: str | None = None, body: bytes | None = None) -> tuple[int, Any, Any]:
    reached.clear()
    ex = exchange(stack.port, raw_request(method, path, key=key, key_header=key_header, xff=xff, body=body),
                  head=[method == "HEAD"], source=source, deadline=10)
    assert ex.responses, f"no answer to {method} {path}: {ex}"
    plane = reached.planes[0] if reached.planes else (None, None)
    return ex.responses[0].status, plane, reached.handlers[0] if reached.handlers else None


# Routes whose answer never ends (the live feed): asked with HEAD, which gets the same access decision
# and an answer of the head alone.
ENDLESS = frozenset({"/v1/router/events"})


def concrete(pattern: str) -> str:
    return pattern.replace("{id}", "no-such-id").replace("{owner}", "no-such-owner")


def route_corpus(stack: Any, reached: Reached, policy: Policy, corpus: Corpus, counter: list[int]) -> None:
    for route in stack.app.routes.routes:
        for state in STATES:
            counter[0] += 1
            n = counter[0]
            key = key_for(policy, route.plane, state)
            # A JSON array is refused by every handler that takes a body: nothing is created or changed.
            body = b"[]" if route.method in ("POST", "PUT", "PATCH") else None
            xff = [f"10.9.{n // 250}.{n % 250 + 1}"]
            method = "HEAD" if route.pattern in ENDLESS else route.method
            status, (asked, admitted), handler = send(
                stack, reached, method, concrete(route.pattern), key=key,
                key_header="bearer" if n % 2 else "x-api-key", xff=xff, body=body)
            label = f"[{policy.name}] {route.method} {route.pattern} key={state}"
            out = Outcome(label, should_admit(policy, route.plane, state), admitted, status, asked, handler)
            if asked != route.plane:
                out.admitted = None
            corpus.add(out)


# (X-Forwarded-For values, peer address, admitted?) with the right admin key on the admin plane.
XFF_CASES: list[tuple[list[str] | None, str, bool]] = [
    (["10.9.200.1"], "127.0.0.1", True),
    (None, "127.0.0.1", False),  # the proxy itself is not an admin address
    (["10.9.200.2"], "127.0.0.3", False),  # spoofed by a peer that is not a trusted proxy
    (["10.9.200.3, 127.0.0.1"], "127.0.0.3", False),
    (["10.9.200.4, 1.2.3.4"], "127.0.0.1", False),  # the rightmost untrusted hop is the client
    (["1.2.3.4, 10.9.200.5"], "127.0.0.1", True),  # entries left of the client are the client's own claims
    (["10.9.200.6, 127.0.0.1"], "127.0.0.1", True),  # trusted hops vouch for the entry to their left
    (["1.2.3.4", "10.9.200.7"], "127.0.0.1", True),  # two header fields read as one list
    (["10.9.200.8", "1.2.3.4"], "127.0.0.1", False),
    (["::ffff:10.9.200.9"], "127.0.0.1", True),  # IPv4-mapped IPv6 is the same client
    (["::ffff:a09:c80a"], "127.0.0.1", True),  # ... in hex (10.9.200.10)
    (["[::ffff:10.9.200.11]:443"], "127.0.0.1", True),
    (["10.8.8.8"], "127.0.0.1", True),  # allowlisted in mapped form
    (["::ffff:10.8.8.8"], "127.0.0.1", True),
    (["::ffff:10.8.8.9"], "127.0.0.1", False),
    (["10.9.200.12:5555"], "127.0.0.1", True),
    (["2001:db8::5"], "127.0.0.1", True),
    (["[2001:db8::6]:8080"], "127.0.0.1", True),
    (["2001:db8:0:1::5"], "127.0.0.1", False),
    (["::ffff:2001:db8::7"], "127.0.0.1", False),
    (["10.9.200.13.nip.io"], "127.0.0.1", False),
    (["010.9.200.14"], "127.0.0.1", False),
    (["0x0a.9.200.15"], "127.0.0.1", False),
    (["167889935"], "127.0.0.1", False),  # 10.9.200.15 as one integer
    (["unknown"], "127.0.0.1", False),
    ([" , "], "127.0.0.1", False),
    (["fe80::1%eth0"], "127.0.0.1", False),
    (["10.9.200.16, nonsense"], "127.0.0.1", False),
]


def xff_corpus(stack: Any, reached: Reached, corpus: Corpus) -> None:
    for values, peer, should in XFF_CASES:
        status, (asked, admitted), handler = send(stack, reached, "GET", "/v1/admin/access/config",
                                                  key=KEYS["admin"][0], xff=values, source=peer)
        corpus.add(Outcome(f"[xff] peer {peer} XFF {values}", should, admitted if asked == "admin" else None,
                           status, asked, handler))


def rate_corpus(stack: Any, reached: Reached, corpus: Corpus, limit: int) -> None:
    """Anonymous and limited: an untrusted peer rotating XFF gets ``limit`` requests, no more; a trusted
    proxy's clients each get their own."""
    for i in range(limit * 4):
        status, (asked, admitted), handler = send(stack, reached, "GET", "/v1/models", xff=[f"10.7.0.{i + 1}"],
                                                  source="127.0.0.4")
        corpus.add(Outcome(f"[rate] untrusted peer, XFF rotating, request {i + 1}", i < limit,
                           admitted if asked == "standalone" else None, status, asked, handler))
    for i in range(limit * 2):
        status, (asked, admitted), handler = send(stack, reached, "GET", "/v1/models", xff=[f"10.6.{i}.1"])
        corpus.add(Outcome(f"[rate] trusted proxy, client 10.6.{i}.1", True,
                           admitted if asked == "standalone" else None, status, asked, handler))


# ---- client certificates ------------------------------------------------------------------------------------

CERTS = [  # (name, subject, issuing CA, admitted?)
    ("kong", "/C=PL/O=Execon/CN=kong", "ca", True),
    ("kong-with-ou", "/C=PL/O=Execon/OU=ops/CN=kong", "ca", True),
    ("kong-evil", "/C=PL/O=Execon/CN=kong-evil", "ca", False),
    ("xkong", "/C=PL/O=Execon/CN=xkong", "ca", False),
    ("execon-evil", "/C=PL/O=Execon Evil/CN=kong", "ca", False),
    ("execon-in-ou", "/C=PL/OU=Execon/CN=kong", "ca", False),
    ("comma-in-cn", "/C=PL/CN=kong\\,O=Execon", "ca", False),
    ("kong-from-rogue-ca", "/C=PL/O=Execon/CN=kong", "rogue-ca", False),
]


def make_pki(d: Path) -> None:
    from test_admin_tls import issue, openssl

    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"), "-days", "2", "-subj", f"/CN={ca}")
    issue(d, "server", "/CN=127.0.0.1", "ca",
          "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for name, subject, ca, _ in CERTS:
        issue(d, name, subject, ca, "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")


def cert_corpus(stack_factory: Any, tmp: Path, corpus: Corpus) -> None:
    from access_support import request

    pki = tmp / "pki"
    pki.mkdir()
    make_pki(pki)
    override = {
        "access": {"managedConfigPath": str(tmp / "access-tls.yaml"),
                   "admin": {"enabled": True, "apiKeyHashes": [{"id": "ops", "hash": KEYS["admin"][1]}],
                             "clientCert": {"required": True, "allowedSubjects": ["CN=kong,O=Execon"]}}},
        "server": {"https": {"enabled": True, "certPath": str(pki / "server.pem"), "keyPath": str(pki / "server.key"),
                             "caPath": str(pki / "ca.pem")}},
    }
    stack = stack_factory(override)
    reached = Reached()
    stack.run(lambda: reached.install(stack.app))
    for name, subject, _, should in CERTS + [("no certificate", "-", "", False)]:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        if name != "no certificate":
            ctx.load_cert_chain(str(pki / f"{name}.pem"), str(pki / f"{name}.key"))
        reached.clear()
        try:
            reply = request(stack.port, "GET", "/v1/admin/access/config",
                            headers={"authorization": f"Bearer {KEYS['admin'][0]}"}, tls=ctx)
            status = reply.status
            asked, admitted = reached.planes[0] if reached.planes else (None, None)
        except (ssl.SSLError, ConnectionError):
            status, asked, admitted = 0, "admin", False  # the handshake refused the certificate
        corpus.add(Outcome(f"[cert] {name} {subject}", should, admitted if asked == "admin" else None, status,
                           asked, reached.handlers[0] if reached.handlers else None))


# ---- the whole drill ----------------------------------------------------------------------------------------------

def run(workdir: Path, stack_factory: Any) -> Corpus:
    corpus = Corpus()
    counter = [0]
    for policy in POLICIES:
        stack = stack_factory(policy_override(policy, workdir))
        reached = Reached()
        stack.run(lambda: reached.install(stack.app))
        version = stack.app.access.policy.version
        route_corpus(stack, reached, policy, corpus, counter)
        if policy is POLICIES[0]:
            xff_corpus(stack, reached, corpus)
        assert stack.app.access.policy.version == version, "the corpus changed the access policy"
    limited = Policy("anonymous limited", {"standalone": {"enabled": True, "auth": {"requireApiKey": False,
                     "anonymous": "limited"}, "defaultLimit": {"requests": 5, "windowSeconds": 3600}},
                     "runtimeAgent": _plane()}, False)
    stack = stack_factory(policy_override(limited, workdir))
    reached = Reached()
    stack.run(lambda: reached.install(stack.app))
    rate_corpus(stack, reached, corpus, 5)
    cert_corpus(stack_factory, workdir, corpus)
    return corpus


class StackFactory:
    """``conftest.stack_factory`` outside pytest."""

    def __init__(self) -> None:
        self.stacks: list[Any] = []

    def __call__(self, override: dict) -> Any:
        from conftest import Stack

        stack = Stack(override).start()
        self.stacks.append(stack)
        return stack

    def close(self) -> None:
        for s in self.stacks:
            s.stop()


def report(corpus: Corpus) -> str:
    outs = corpus.outcomes
    groups: dict[str, list[Outcome]] = {}
    for o in outs:
        groups.setdefault(o.label.split("]")[0].strip("["), []).append(o)
    rows = [[g, len(os_), sum(o.should for o in os_), sum(not o.should for o in os_),
             sum(o.wrong == "accepted, should deny" for o in os_), sum(o.wrong == "denied, should accept" for o in os_),
             sum(bool(o.wrong) and "should" not in o.wrong for o in os_)] for g, os_ in groups.items()]
    lines = [f"Requests: {len(outs)}; accepted that should be denied: "
             f"{sum(o.wrong == 'accepted, should deny' for o in outs)}; denied that should be accepted: "
             f"{sum(o.wrong == 'denied, should accept' for o in outs)}; other inconsistencies: "
             f"{sum(bool(o.wrong) and 'should' not in o.wrong for o in outs)}",
             drillkit.md_table(["group", "requests", "should accept", "should deny", "wrongly accepted",
                                "wrongly denied", "other"], rows)]
    lines += [f"WRONG {o.label}: {o.wrong} (status {o.status}, plane asked {o.plane_asked})" for o in corpus.wrong]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args(argv)
    factory = StackFactory()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = run(Path(tmp), factory)
    finally:
        factory.close()
    print(report(corpus))
    return 1 if corpus.wrong else 0


if __name__ == "__main__":
    sys.exit(main())
