"""Wiring: the one place that builds every part from the config and hands each the parts it uses.

Construction follows the arrows (each part is built after what it takes), and nothing is patched in
afterwards. ``docs/architecture.md`` walks one request through the parts; ``App`` itself only builds,
starts and stops them.
"""

from __future__ import annotations

import asyncio
import ssl
import time

from .access.control import AccessControl
from .api import admin, anthropic, events, explain, jobs, kong, ollama, openai, responses, status, ui
from .api.gate import FrontGate, HostRule
from .api.table import RouteTable
from .config.schema import CORE_TASK_TYPES, Config
from .events import EventHub
from .gpu import GpuBackend, GpuProbe
from .http.messages import ServerLimits
from .http.server import HttpServer
from .jobs import JobManager
from .log import Logger
from .metrics import Metrics
from .residency import Residency
from .routing import RoutingTable
from .runner import Runner
from .scheduler import Scheduler
from .sessions import Sessions
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
        self.log = log = log or Logger("info")
        self.events = hub = EventHub()  # the live feed: producers publish only while someone reads it
        self.table = table = RoutingTable(cfg)
        self.metrics = metrics = Metrics(table.order, tuple(CORE_TASK_TYPES) + tuple(table.task_types))
        self.client = client = OllamaClient(cfg.ollama.base_url, connect_timeout=cfg.ollama.connect_timeout_ms / 1000,
                                            pool_size=cfg.ollama.max_connections,
                                            max_reply_bytes=cfg.ollama.max_reply_bytes)
        poll_now = asyncio.Event()  # the snapshot waits on it between polls; whoever sets it gets a poll soon
        self.residency = residency = Residency(cfg, client, metrics, log, refresh_snapshot=poll_now.set)
        self.scheduler = scheduler = Scheduler(cfg, residency)
        gpu = GpuProbe(cfg.gpu, backend=gpu_backend, log=lambda event, fields: log.warning(event, **fields))
        self.snapshot = snapshot = Snapshot(cfg, client, gpu, table, log, hub,
                                            listeners=(scheduler.set_loaded, residency.set_loaded), wake=poll_now)
        sticky = cfg.router.sticky
        self.sessions = sessions = Sessions(sticky.max_conversations, sticky.idle_ttl_ms / 1000)
        self.runner = runner = Runner(cfg, table, scheduler, client, snapshot, metrics, log, hub, sessions)
        self.jobs = job_manager = JobManager(cfg, scheduler, runner, metrics, log, hub)
        self.access = access = AccessControl(cfg, log=log, metrics=metrics)
        state = status.StatusRoutes(cfg, scheduler, snapshot, job_manager, metrics, sessions)
        self.routes = RouteTable(
            state.routes()
            + openai.OpenAIDoor(cfg, runner, job_manager, table).routes()
            + jobs.routes(job_manager)
            + admin.AdminRoutes(access).routes()
            + kong.KongDoor(cfg, runner, job_manager, table, snapshot, scheduler).routes()
            + ollama.OllamaDoor(cfg, runner, snapshot, client).routes()
            + anthropic.AnthropicDoor(cfg, runner).routes()
            + responses.ResponsesDoor(cfg, runner, table).routes()
            + explain.Explainer(cfg, runner, table).routes()
            + events.FeedRoutes(cfg, hub, scheduler, snapshot, job_manager, metrics, residency, table).routes()
            + ui.DashboardPage().routes(),
            cfg.server.base_path,
            dict([ollama.ERROR_DIALECT, anthropic.ERROR_DIALECT]),
        )
        origins = frozenset(cfg.server.allowed_origins)
        self.gate = FrontGate(self.routes, access, origins,
                              HostRule.for_listener(cfg.server.host, cfg.server.allowed_hosts))
        self.server = HttpServer(self.gate.handle, limits=server_limits(cfg), ssl_context=tls_context(cfg), log=log,
                                 error_body=self.routes.error_body)
        self.port: int | None = None
        # metrics.bind: /metrics alone on its own plain-HTTP listener, off the public interface.
        self.metrics_server: HttpServer | None = None
        self.metrics_port: int | None = None
        if cfg.metrics.bind:
            metrics_host = cfg.metrics.bind.rpartition(":")[0].strip("[]")
            metrics_gate = FrontGate(RouteTable([state.metrics_route()], cfg.server.base_path), access, origins,
                                     HostRule.for_listener(metrics_host, cfg.server.allowed_hosts))
            self.metrics_server = HttpServer(metrics_gate.handle, limits=server_limits(cfg), log=log)

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
        self.events.close()  # live feeds end now: they must not hold the grace period open
        clean = await self.server.shutdown(grace)
        if self.metrics_server is not None:
            await self.metrics_server.shutdown(0)
        await self.jobs.stop(max(0.0, deadline - time.monotonic()))
        await self.residency.stop()
        self.runner.stop()
        await self.snapshot.stop()
        await self.client.aclose()
        self.access.close()
        return clean
