"""The front gate: what every request meets after parsing and before its handler.

In order: the browser checks (a page on another origin must not drive a localhost router, nor may a page
whose name was rebound to 127.0.0.1), the route (404/405 before anything else is looked at), access control
on the headers alone (the body is not read yet), then the handler. Rate-limit headers that access control
produced go on whatever answer follows, errors included.
"""

from __future__ import annotations

import socket
from typing import Iterable

from ..access.control import AccessControl
from ..access.netaddr import is_loopback, parse_address
from ..errors import HttpError
from ..http.messages import Request, Response, StreamResponse
from .table import RouteTable

CORS_HEADERS = "authorization, content-type, x-api-key, x-request-id"
_SEEN = 256  # Host values remembered at most


class HostRule:
    """The ``Host`` names a listener on a loopback address answers to, as Ollama does against DNS rebinding:
    ``localhost`` and ``*.localhost``, loopback IP literals, this machine's name, and ``server.allowedHosts``.
    A page on ``rebind.attacker.example`` whose name now points at 127.0.0.1 sends its own name and is
    refused. A request without ``Host`` (HTTP/1.0) passes: browsers always send one."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self._seen: dict[str, bool] = {}  # verdicts by header value: a client sends the same one every time

    @classmethod
    def for_listener(cls, bind_host: str, allowed: Iterable[str]) -> "HostRule | None":
        """None (no check) for a listener reachable from other machines: there the names are the operator's."""
        if not is_loopback(bind_host):
            return None
        return cls({socket.gethostname().lower(), *(name.lower() for name in allowed)})

    def allows(self, host: str | None) -> bool:
        if not host:
            return True
        verdict = self._seen.get(host)
        if verdict is None:
            if len(self._seen) >= _SEEN:
                self._seen.clear()
            verdict = self._seen[host] = self._judge(host)
        return verdict

    def _judge(self, host: str) -> bool:
        address = parse_address(host)
        if address is not None:
            return address.is_loopback
        name = host.rpartition(":")[0] if ":" in host else host
        name = name.lower().rstrip(".")
        return name == "localhost" or name.endswith(".localhost") or name in self.names


class FrontGate:
    def __init__(self, routes: RouteTable, access: AccessControl, allowed_origins: frozenset[str],
                 hosts: HostRule | None) -> None:
        self.routes = routes
        self.access = access
        self.allowed_origins = allowed_origins
        self.hosts = hosts

    async def handle(self, req: Request) -> Response | StreamResponse:
        host = req.headers.get("host")
        if self.hosts is not None and not self.hosts.allows(host):
            raise HttpError(403, f"Host {host[:100]!r} is not allowed: this router listens on a loopback address and "
                                 "answers only local names (server.allowedHosts adds others)", code="host_not_allowed")
        origin = req.headers.get("origin")
        if origin is not None and origin not in self.allowed_origins:
            raise HttpError(403, f"Cross-origin requests from {origin[:100]} are not allowed", code="origin_not_allowed")
        if req.method == "OPTIONS":
            return self._preflight(req, origin)
        route, params = self.routes.match(req.method, req.path)
        try:
            req.principal = await self.access.authorize(req, route.plane)
            response = await route.handler(req, params)
        except HttpError as e:
            if not req.extra_headers:
                raise
            # A copy: the caught error may be raised again elsewhere, and must not collect these headers.
            raise HttpError(e.status, e.message, code=e.code, headers=[*e.headers, *req.extra_headers],
                            extra=e.extra) from None
        response.headers.extend(req.extra_headers)
        if origin is not None:
            response.headers.append(("Access-Control-Allow-Origin", origin))
        return response

    def _preflight(self, req: Request, origin: str | None) -> Response:
        allow = self.routes.allowed(req.path)
        headers = [("Allow", allow)]
        if origin is not None:
            headers += [("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Methods", allow),
                        ("Access-Control-Allow-Headers", CORS_HEADERS)]
        return Response(204, b"", headers)
