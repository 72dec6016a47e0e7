"""The front gate: what every request meets after parsing and before its handler.

In order: the browser checks (a page on another origin must not drive a localhost router), the route
(404/405 before anything else is looked at), access control on the headers alone (the body is not read
yet), then the handler. Rate-limit headers that access control produced go on whatever answer follows,
errors included.
"""

from __future__ import annotations

from ..access.control import AccessControl
from ..errors import HttpError
from ..http.server import Request, Response, StreamResponse
from .table import RouteTable

CORS_HEADERS = "authorization, content-type, x-api-key, x-request-id"


class FrontGate:
    def __init__(self, routes: RouteTable, access: AccessControl, allowed_origins: frozenset[str]) -> None:
        self.routes = routes
        self.access = access
        self.allowed_origins = allowed_origins

    async def handle(self, req: Request) -> Response | StreamResponse:
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
