"""``GET /ui/``: the dashboard, one static HTML file shipped in the package (``data/dashboard.html``).

It carries its CSS and JavaScript inline and fetches nothing but this router's own feed, so it works on an
airgapped host and from inside the zipapp. The page holds no data and needs no key: it asks for one, and
the feed it reads is guarded like ``/v1/router/status``. Its Content-Security-Policy admits exactly its own
inline script and style (by hash) and connections to this origin.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from ..http.messages import Request, Response
from .table import OPEN, Route

PACKAGE = "ollama_agent_router"
PAGE = "dashboard.html"
HTML = "text/html; charset=utf-8"


def page_bytes() -> bytes:
    return resources.files(PACKAGE).joinpath("data", PAGE).read_bytes()


def _hashes(html: bytes, tag: bytes) -> str:
    blocks = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", html, re.S)
    return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b).digest()).decode("ascii") + "'" for b in blocks)


def content_security_policy(html: bytes) -> str:
    return (f"default-src 'none'; script-src {_hashes(html, b'script')}; style-src {_hashes(html, b'style')}; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class DashboardPage:
    def __init__(self) -> None:
        self.body = page_bytes()
        self.headers = [
            ("Content-Security-Policy", content_security_policy(self.body)),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-cache"),
        ]

    def routes(self) -> list[Route]:
        return [Route("GET", "/ui", OPEN, self.page)]  # the route table takes /ui/ too

    async def page(self, req: Request, params: dict[str, str]) -> Response:
        return Response(200, self.body, list(self.headers), content_type=HTML)
