"""Connection limits of the HTTP server (contract section 13): the port faces a network.

aiohttp 3.14 already closes a connection that has not sent complete request headers within
`keepalive_timeout` of connecting or of its previous answer (data trickling in does not restart
that timer), so that one setting is both the header timeout and the idle keep-alive limit. What it
lacks is added here:

- a deadline on reading a request's body and writing its answer (`ConnectionGuard.middleware`);
- a cap on open connections below the descriptor limit: at the cap a new connection evicts the
  oldest one that is not in the middle of a request, so a health check still gets in while
  thousands of idle or slow sockets are open.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

# stdlib, not structlog, on purpose: logging_setup rate-limits repeated stdlib lines
log = logging.getLogger("infra_controller.http.guard")

# beyond this, idle connections cost more memory than a controller's API is worth
MAX_CONNECTIONS_CEILING = 10_000
# a burst of connections waits in the kernel's queue (capped by net.core.somaxconn) instead of
# having its handshakes dropped and retried seconds later
MAX_LISTEN_BACKLOG = 1024
# descriptors left for the rest of the process: AWS connection pools, Terraform and git pipes,
# the desired-state and state files
RESERVED_DESCRIPTORS = 256
BUSY_REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (call once at daemon start); returns the
    soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # macOS reports an infinite hard limit but refuses more than OPEN_MAX (10240)
    target = 10_240 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def _soft_open_file_limit() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def listen_backlog() -> int:
    """The listen backlog for the current open-file limit: asyncio accepts up to that many
    connections at once, each a descriptor, before the guard can evict any."""
    soft = _soft_open_file_limit()
    return MAX_LISTEN_BACKLOG if soft is None else max(16, min(MAX_LISTEN_BACKLOG, soft // 4))


def default_max_connections() -> int:
    """The connection cap for the current open-file limit: with one accept burst and the rest of
    the process, it stays under the limit."""
    soft = _soft_open_file_limit()
    if soft is None:
        return MAX_CONNECTIONS_CEILING
    return max(16, min(MAX_CONNECTIONS_CEILING, soft - listen_backlog() - RESERVED_DESCRIPTORS))


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped so the guard knows its transport even
    after aiohttp let go of it (a close waiting on unsent data still holds the descriptor)."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.admitted = self.guard.admit(self)
        if self.admitted:
            self.inner.connection_made(transport)
        else:
            self.transport.write(BUSY_REFUSAL)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.forget(self)
        if self.admitted:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class ConnectionGuard:
    """Counts the open connections (evicting at the cap) and the requests in progress, and gives
    each request its deadline."""

    def __init__(self, max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self._open: dict[_Connection, None] = {}  # insertion order: the oldest first
        self._busy: set[asyncio.BaseProtocol] = set()  # aiohttp protocols inside a request
        self.evicted = 0
        self.refused = 0
        self.cut = 0  # requests past their deadline

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def requests_in_progress(self) -> int:
        return len(self._busy)

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        return _Connection(self, inner)

    def admit(self, conn: _Connection) -> bool:
        if len(self._open) >= self.max_connections:
            # the oldest idle one; else the oldest inside a request (slow requests are the
            # attack, and every handler answers fast): a new client always gets in
            victim = next((c for c in self._open if c.inner not in self._busy), None)
            if victim is None:
                victim = next(iter(self._open), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            log.warning("http connection cap reached: dropping the oldest idle connections")
            self._drop(victim)
        self._open[conn] = None
        return True

    def forget(self, conn: _Connection) -> None:
        self._open.pop(conn, None)

    def _drop(self, conn: _Connection) -> None:
        del self._open[conn]
        if conn.transport is not None:
            conn.transport.abort()  # close() would wait for unsent data a client never reads

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Reads the body and writes the whole answer within `request_timeout`, or aborts."""
        protocol, transport = request.protocol, request.transport
        self._busy.add(protocol)
        deadline = asyncio.timeout(self.request_timeout)
        try:
            if transport is not None:
                # the answer counts as written once the kernel took it all, not when buffered
                transport.set_write_buffer_limits(high=0)
            async with deadline:
                try:
                    response = await handler(request)
                except web.HTTPException as exc:
                    await _send(request, exc)
                    raise
                await _send(request, response)
            return response
        except TimeoutError:
            if not deadline.expired():
                raise
            self.cut += 1
            log.warning("http request cut off: body or answer slower than the deadline")
            if transport is not None:
                transport.abort()
            return web.Response(status=408)  # never sent: the connection is gone
        finally:
            self._busy.discard(protocol)


async def _send(request: web.Request, response: web.StreamResponse) -> None:
    await response.prepare(request)
    await response.write_eof()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through the guard."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._guard.protocol(server()), self._host, self._port, backlog=self._backlog
        )
