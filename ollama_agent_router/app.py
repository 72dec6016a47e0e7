"""Wiring: one App per process holds the config-derived parts and turns a request into a response.

A request goes: httpserver (parse, limits) -> App.handle (origin check, route table, access) ->
the route's handler (api_*.py) -> service (classify, decide, slot, upstream) -> relay or JSON.
"""

from __future__ import annotations

import ssl
import time

from .access.control import AccessControl
from .api import admin as api_admin
from .api import explain as api_explain
from .api import jobs as api_jobs
from .api import kong as api_kong
from .api import ollama as api_frontdoor
from .api import openai as api_chat
from .api import status as api_status
from .api.table import RouteTable
from .config.schema import CORE_TASK_TYPES, Config
from .errors import HttpError
from .gpu import GpuBackend, GpuProbe
from .http.messages import Request, Response, ServerLimits, StreamResponse
from .http.server import HttpServer
from .jobs import JobManager
from .log import Logger
from .metrics import Metrics
from .residency import Residency
from .routing import RoutingTable
from .scheduler import Scheduler
from .service import Service
from .snapshot import Snapshot
from .upstream import OllamaClient


def server_limits(cfg: Config) -> ServerLimits:
    s = cfg.server
    return ServerLimits(
        max_body=s.request_body_limit,
        max_header_bytes=s.max_header_bytes,
        max_headers=s.max_headers,
        header_timeout=s.header_timeout_ms / 1000,
        body_timeout=s.body_timeout_ms / 1000,
        idle_timeout=s.idle_timeout_ms / 1000,
        max_connections=s.max_connections,
    )


def tls_context(cfg: Config) -> ssl.SSLContext | None:
    https = cfg.server.https
    if not https.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert https.cert_path and https.key_path  # enforced by config validation
    ctx.load_cert_chain(https.cert_path, https.key_path)
    if https.ca_path:
        # Client certificates are requested, not required: the admin plane decides per request.
        ctx.load_verify_locations(https.ca_path)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


class App:
    def __init__(self, cfg: Config, *, log: Logger | None = None, gpu_backend: GpuBackend | None = None) -> None:
        self.cfg = cfg
        self.log = log or Logger("info")
        self.table = RoutingTable(cfg)
        self.scheduler = Scheduler(cfg)
        self.client = OllamaClient(
            cfg.ollama.base_url, connect_timeout=cfg.ollama.connect_timeout_ms / 1000,
            pool_size=cfg.ollama.max_connections,
        )
        self.gpu = GpuProbe(cfg.gpu, backend=gpu_backend, log=lambda event, fields: self.log.warning(event, **fields))
        self.snapshot = Snapshot(cfg, self.client, self.gpu, self.scheduler, self.table, self.log)
        self.metrics = Metrics(self.table.order, tuple(CORE_TASK_TYPES) + tuple(self.table.task_types))
        self.service = Service(self)
        self.jobs = JobManager(self)
        self.residency = Residency(self)
        self.scheduler.effects = self.residency
        self.access = AccessControl(cfg, log=self.log, metrics=self.metrics)
        self.routes = RouteTable(
            api_status.routes(self) + api_chat.routes(self) + api_jobs.routes(self) + api_admin.routes(self)
            + api_kong.routes(self) + api_frontdoor.routes(self) + api_explain.routes(self),
            cfg.server.base_path,
        )
        self.allowed_origins = frozenset(cfg.server.allowed_origins)
        self.server = HttpServer(self.handle, limits=server_limits(cfg), ssl_context=tls_context(cfg), log=self.log)
        self.port: int | None = None
        # metrics.bind: /metrics alone on its own plain-HTTP listener, off the public interface.
        self.metrics_server: HttpServer | None = None
        self.metrics_port: int | None = None
        if cfg.metrics.bind:
            self.metrics_routes = RouteTable([api_status.metrics_route(self)], cfg.server.base_path)
            self.metrics_server = HttpServer(self.handle_metrics, limits=server_limits(cfg), log=self.log)

    async def handle(self, req: Request) -> Response | StreamResponse:
        origin = req.headers.get("origin")
        if origin is not None and origin not in self.allowed_origins:
            # Browsers attach Origin; a web page must not be able to drive a localhost router.
            raise HttpError(403, f"Cross-origin requests from {origin[:100]} are not allowed", code="origin_not_allowed")
        if req.method == "OPTIONS":
            headers = [("Allow", self.routes.allowed(req.path))]
            if origin is not None:
                headers += [("Access-Control-Allow-Origin", origin),
                            ("Access-Control-Allow-Methods", headers[0][1]),
                            ("Access-Control-Allow-Headers", "authorization, content-type, x-api-key, x-request-id")]
            return Response(204, b"", headers)
        route, params = self.routes.match(req.method, req.path)
        try:
            req.principal = await self.access.authorize(req, route.plane)
            response = await route.handler(req, params)
        except HttpError as e:
            # Rate-limit headers belong on every answer that counted against the limit, errors included.
            extra = req.extra_headers
            if not extra:
                raise
            raise HttpError(e.status, e.message, code=e.code, headers=[*e.headers, *extra], extra=e.extra) from None
        response.headers.extend(req.extra_headers)
        if origin is not None:
            response.headers.append(("Access-Control-Allow-Origin", origin))
        return response

    async def handle_metrics(self, req: Request) -> Response | StreamResponse:
        route, params = self.metrics_routes.match(req.method, req.path)
        req.principal = await self.access.authorize(req, route.plane)
        return await route.handler(req, params)

    async def start(self, host: str | None = None, port: int | None = None, metrics_port: int | None = None) -> int:
        """Start serving; ``metrics_port`` overrides the port of ``metrics.bind`` (0 picks a free one)."""
        await self.snapshot.start()
        host = host or self.cfg.server.host
        self.jobs.start()
        self.residency.start()
        self.port = await self.server.listen(host, self.cfg.server.port if port is None else port)
        if self.metrics_server is not None and self.cfg.metrics.bind:
            m_host, _, m_port = self.cfg.metrics.bind.rpartition(":")
            self.metrics_port = await self.metrics_server.listen(
                m_host.strip("[]"), int(m_port) if metrics_port is None else metrics_port)
        self.access.announce(host)
        return self.port

    def reload_access(self) -> None:
        """Re-read the managed access file (``serve`` calls this on SIGHUP)."""
        self.access.reload()

    async def stop(self, grace: float | None = None) -> bool:
        """Stop accepting, let in-flight requests finish within the grace period, then release everything."""
        grace = self.cfg.server.shutdown_grace_ms / 1000 if grace is None else grace
        deadline = time.monotonic() + grace
        self.jobs.pause()  # queued jobs wait for the next start rather than begin during the grace period
        clean = await self.server.shutdown(grace)
        if self.metrics_server is not None:
            await self.metrics_server.shutdown(0)
        await self.jobs.stop(max(0.0, deadline - time.monotonic()))
        await self.residency.stop()
        self.service.stop()
        await self.snapshot.stop()
        await self.client.aclose()
        self.access.close()
        return clean
