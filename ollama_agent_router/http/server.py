"""The HTTP/1.1 server: listeners, the connection cap, and a graceful shutdown.

Each accepted socket becomes an ``http.connection.Connection``; they all share one ``ServerState``.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import replace

from ..log import Logger
from .connection import Connection, Phase, ServerState
from .fdlimit import AcceptErrorLog, fit_connections
from .messages import ErrorBody, Handler, ServerLimits, openai_error_body


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        limits: ServerLimits = ServerLimits(),
        ssl_context: ssl.SSLContext | None = None,
        log: Logger | None = None,
        error_body: ErrorBody = openai_error_body,
    ) -> None:
        self.ssl_context = ssl_context
        self.log = log or Logger("warning")
        self._state = ServerState(handler, limits, self.log, error_body)
        self._servers: list[asyncio.base_events.Server] = []

    @property
    def connections(self) -> set[Connection]:
        return self._state.connections

    @property
    def in_flight(self) -> int:
        return self._state.in_flight

    async def listen(self, host: str, port: int) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        loop = asyncio.get_running_loop()
        state = self._state
        # The connection cap must fit under the open-files limit, or accept() fails before the 503 can.
        state.limits = replace(state.limits, max_connections=fit_connections(state.limits.max_connections, self.log))
        AcceptErrorLog.install(loop, self.log)
        server = await loop.create_server(
            lambda: Connection(state), host, port, ssl=self.ssl_context, backlog=1024, reuse_address=True
        )
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> bool:
        """Stop accepting, let in-flight requests finish within ``grace`` seconds, then close everything.

        Returns True when every in-flight request finished in time.
        """
        state = self._state
        state.closing = True
        for server in self._servers:
            server.close()
        for conn in list(state.connections):
            if conn.phase is Phase.IDLE:
                conn.close()
        clean = True
        if state.in_flight:
            state.idle_event = asyncio.Event()
            waiter = asyncio.ensure_future(state.idle_event.wait())
            await asyncio.wait((waiter,), timeout=grace)
            clean = waiter.done()
            waiter.cancel()
        for conn in list(state.connections):
            conn.close() if conn.phase in (Phase.IDLE, Phase.HEAD) else conn.abort()
        for server in self._servers:
            await server.wait_closed()
        return clean
