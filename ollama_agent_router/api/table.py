"""The route table: path + method -> (access plane, handler), under ``server.basePath``.

Matching follows the original's Express defaults (case-insensitive static segments, one trailing
slash tolerated) but splits the raw path before percent-decoding, so an encoded slash or ``%2e%2e``
stays inside its segment and can never reach another route. Every miss is the same 404.

The table also knows each path's error dialect: a door declares the path prefix its API owns (``/api`` is
Ollama's, ``/v1/messages`` Anthropic's), and every error under it, a miss or a 405 included, is written the
way that API's clients read errors. Everything else speaks OpenAI's envelope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable
from urllib.parse import unquote

from ..errors import DIALECTS, HttpError, not_found, render_error
from ..http.messages import Request, Response, StreamResponse

HandlerFn = Callable[[Request, dict[str, str]], Awaitable["Response | StreamResponse"]]

# Planes: None = always open; "standalone", "runtimeAgent", "jobs" (shared by both), "admin", "metrics".
OPEN = None


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # "/v1/jobs/{id}/result"
    plane: str | None
    handler: HandlerFn


class RouteTable:
    def __init__(self, routes: list[Route], base_path: str = "/", dialects: dict[str, str] | None = None) -> None:
        self.base = "" if base_path == "/" else base_path.lower()
        self.routes = tuple(routes)  # as given, for tools that work from the table (the access drills)
        assert all(d in DIALECTS for d in (dialects or {}).values())
        # Longest prefix first, so a prefix inside another one's scope wins.
        self._dialects = sorted(((p.lower().rstrip("/"), d) for p, d in (dialects or {}).items()),
                                key=lambda item: -len(item[0]))
        self._static: dict[str, dict[str, Route]] = {}
        self._dynamic: list[tuple[tuple[str, ...], dict[str, Route]]] = []
        for r in routes:
            segs = tuple(s.lower() if not s.startswith("{") else s for s in r.pattern.strip("/").split("/"))
            if any(s.startswith("{") for s in segs):
                for known, methods in self._dynamic:
                    if known == segs:
                        methods[r.method] = r
                        break
                else:
                    self._dynamic.append((segs, {r.method: r}))
            else:
                self._static.setdefault("/" + "/".join(segs), {})[r.method] = r

    def _relative(self, raw_path: str) -> str | None:
        """The path below the base path, one trailing slash dropped; None when it is not below it."""
        path = raw_path
        if self.base:
            if not path.lower().startswith(self.base) or path[len(self.base) : len(self.base) + 1] not in ("/", ""):
                return None
            path = path[len(self.base) :] or "/"
        if path != "/" and path.endswith("/"):
            path = path[:-1]
        return path

    def dialect(self, raw_path: str) -> str:
        path = (self._relative(raw_path) or "").lower()
        for prefix, dialect in self._dialects:
            if path == prefix or path.startswith(prefix + "/"):
                return dialect
        return "openai"

    def error_body(self, raw_path: str, err: HttpError) -> bytes:
        """The body of ``err`` for a request to ``raw_path`` (the HTTP server's ``error_body``)."""
        return render_error(err, self.dialect(raw_path))

    def _lookup(self, raw_path: str) -> tuple[dict[str, Route], dict[str, str]]:
        path = self._relative(raw_path)
        if path is None or "//" in path:
            raise not_found()
        methods = self._static.get(path.lower())
        if methods is not None:
            return methods, {}
        segs = path.strip("/").split("/")
        for pattern, candidate in self._dynamic:
            params: dict[str, str] = {}
            if len(pattern) == len(segs) and _match(pattern, segs, params):
                return candidate, params
        raise not_found()

    def allowed(self, raw_path: str) -> str:
        """The Allow header value for a path (raises the 404 for unknown paths)."""
        methods, _ = self._lookup(raw_path)
        return ", ".join(sorted(set(methods) | ({"HEAD"} if "GET" in methods else set())))

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request, with decoded path parameters. Raises the 404 or a 405."""
        methods, params = self._lookup(raw_path)
        route = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
        if route is None:
            allowed = self.allowed(raw_path)
            raise HttpError(405, f"Method {method} not allowed", code="method_not_allowed", headers=[("Allow", allowed)])
        return route, params


def _match(pattern: tuple[str, ...], segs: list[str], params: dict[str, str]) -> bool:
    for want, got in zip(pattern, segs):
        if want.startswith("{"):
            if not got:
                return False
            try:
                params[want[1:-1]] = unquote(got, errors="strict")
            except UnicodeDecodeError:
                return False
        elif want != got.lower():
            return False
    return True
