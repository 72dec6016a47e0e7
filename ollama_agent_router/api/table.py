"""The route table: path + method -> (access plane, handler), under ``server.basePath``.

Matching follows the original's Express defaults (case-insensitive static segments, one trailing
slash tolerated) but splits the raw path before percent-decoding, so an encoded slash or ``%2e%2e``
stays inside its segment and can never reach another route. Every miss is the same JSON 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from ..errors import HttpError, not_found
from ..http.messages import Request, Response, StreamResponse
from ..jsonutil import parse_json

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
    def __init__(self, routes: list[Route], base_path: str = "/") -> None:
        self.base = "" if base_path == "/" else base_path.lower()
        self.routes = tuple(routes)  # as given, for tools that work from the table (the access drills)
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

    def _lookup(self, raw_path: str) -> tuple[dict[str, Route], dict[str, str]]:
        path = raw_path
        if self.base:
            if not path.lower().startswith(self.base) or path[len(self.base) : len(self.base) + 1] not in ("/", ""):
                raise not_found()
            path = path[len(self.base) :] or "/"
        if path != "/" and path.endswith("/"):
            path = path[:-1]
        if "//" in path:
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
        """The Allow header value for a path (raises the JSON 404 for unknown paths)."""
        methods, _ = self._lookup(raw_path)
        return ", ".join(sorted(set(methods) | ({"HEAD"} if "GET" in methods else set())))

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        """The route for a request, with decoded path parameters. Raises the JSON 404 or a 405."""
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


# Deeper JSON is refused: re-encoding it later (forwarding, storing a job) could hit Python's recursion limit.
MAX_JSON_DEPTH = 200


async def read_json(req: Request, *, limit: int | None = None) -> Any:
    """The request body as JSON whatever the Content-Type says (``curl -d`` sends form encoding).

    An empty body is ``None``: Kong sends bodiless GET/DELETE with ``content-type: application/json``.
    """
    raw = await req.body(limit)
    if not raw.strip():
        return None
    try:
        body = parse_json(raw.decode("utf-8"))
        # Counting brackets is C-speed; only a body with that many containers is walked.
        if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH or json_depth(body) <= MAX_JSON_DEPTH:
            return body
    except UnicodeDecodeError:
        raise HttpError(400, "Request body is not valid UTF-8", code="invalid_json") from None
    except ValueError as e:
        raise HttpError(400, f"Malformed JSON in request body: {e}", code="invalid_json") from None
    except RecursionError:
        pass
    raise HttpError(400, f"Request body JSON is nested deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")


def json_depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (0 for a scalar), without recursing."""
    deepest = 0
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


async def read_json_object(req: Request) -> dict:
    body = await read_json(req)
    if not isinstance(body, dict):
        raise HttpError(400, "Request body must be a JSON object", code="invalid_body")
    return body
