"""The HTTP server (contract section 6): metrics, health, status, and the mutating API.

Mutating endpoints answer 403 when no token is configured and 401 without the right bearer
token (compared in constant time); the webhook the same with its HMAC signature. The port faces
a network: slow, idle and surplus connections are cut by `controller.http_guard`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from datetime import datetime
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controller.core.clock import utc_iso
from controller.engine.controller import NOT_LEADER, Controller
from controller.engine.passes import PassRequest
from controller.http_common import (
    CONTROLLER_KEY,
    authorized,
    environment_request,
    error,
    header_bytes,
)
from controller.http_guard import (
    ConnectionGuard,
    GuardedSite,
    default_max_connections,
    listen_backlog,
)
from controller.http_overrides import add_override_routes
from controller.status_view import controller_status, seed_status

log = structlog.get_logger("infra_controller.http")

WEBHOOK_MAX_BYTES = 1024 * 1024
HEADER_TIMEOUT_SECONDS = 10.0  # request headers complete, and keep-alive idle, within this
BODY_TIMEOUT_SECONDS = 30.0  # body read and answer written within this (1 MiB at 35 KB/s)
REMEMBERED_DELIVERIES = 1000
WEBHOOK_BODIES_AT_ONCE = 4  # GitHub sends one delivery at a time per hook
SIGNATURE = re.compile(rb"sha256=[0-9a-f]{64}")
BODY_READS_KEY = web.AppKey("webhook_body_reads", asyncio.Semaphore)


class RecentDeliveries:
    """The last webhook deliveries, by `X-GitHub-Delivery` id and by signed body: the signature
    covers the body only, so a replay under a forged new id is still the same body."""

    def __init__(self, size: int = REMEMBERED_DELIVERIES) -> None:
        self._size = size
        self._keys: dict[str, None] = {}  # insertion order: the oldest first

    def seen_before(self, *keys: str) -> bool:
        """Whether any key was seen; the keys are remembered either way."""
        seen = any(key in self._keys for key in keys)
        for key in keys:
            self._keys.pop(key, None)
            self._keys[key] = None
        while len(self._keys) > 2 * self._size:  # two keys a delivery
            del self._keys[next(iter(self._keys))]
        return seen


DELIVERIES_KEY = web.AppKey("deliveries", RecentDeliveries)
GUARD_KEY = web.AppKey("guard", ConnectionGuard)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[CONTROLLER_KEY].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    if controller.healthy():
        return web.json_response({"status": "ok"})
    last = controller.snapshot().last_pass_completed_at
    return web.json_response(
        {"status": "stale", "last_pass_completed_at": utc_iso(last)}, status=503
    )


async def readyz(request: web.Request) -> web.Response:
    reason = request.app[CONTROLLER_KEY].ready()
    if reason is None:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": reason}, status=503)


async def status(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    return web.json_response(controller_status(controller.snapshot(), controller.clock.now()))


async def environment_status(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    name = request.match_info["name"]
    env = controller.snapshot().environments.get(name)
    if env is None:
        return error(404, f"unknown environment {name!r}")
    return web.json_response(seed_status(env, controller.clock.now()))


MAX_EVENTS = 1000


async def events(request: web.Request) -> web.Response:
    """`GET /events?environment=NAME&kind=KIND&since=ISO&limit=N`: newest first."""
    query = request.query
    try:
        limit = int(query.get("limit", "100"))
        since_text = query.get("since")
        since = datetime.fromisoformat(since_text.replace("Z", "+00:00")) if since_text else None
    except ValueError:
        return error(400, "limit: a number; since: an ISO 8601 time such as 2026-11-25T10:00:00Z")
    if not 1 <= limit <= MAX_EVENTS or (since is not None and since.tzinfo is None):
        return error(400, f"limit: 1 to {MAX_EVENTS}; since: with its time zone (Z)")
    kinds = [k for value in query.getall("kind", []) for k in value.split(",") if k]
    found = await request.app[CONTROLLER_KEY].events(
        query.get("environment") or None, kinds, since, limit
    )
    return web.json_response({"events": [e.to_json() for e in found]})


async def wake(request: web.Request) -> web.Response:
    target = await environment_request(request)
    if isinstance(target, web.Response):
        return target
    controller, name = target
    reason = controller.request_wake(name)
    if reason is not None:
        return error(503 if reason == NOT_LEADER else 409, reason)
    return web.json_response({"message": f"waking {name}", "environment": name}, status=202)


async def reconcile(request: web.Request) -> web.Response:
    """A pass now; failed Terraform runs of the environment (or of all) retried at once."""
    if refused := authorized(request):
        return refused
    controller = request.app[CONTROLLER_KEY]
    name = request.query.get("environment") or None
    if controller.stopping:
        return error(503, "shutting down: no pass follows; ask again once restarted")
    if (reason := controller.request_retry(name)) is not None:
        unknown = error(404, f"unknown environment {name!r}")
        return error(503, reason) if reason == NOT_LEADER else unknown
    body: dict[str, Any] = {"message": "reconcile requested", "environment": name}
    return web.json_response(body, status=202)


async def git_hook(request: web.Request) -> web.Response:
    controller = request.app[CONTROLLER_KEY]
    secret = controller.settings.webhook_secret
    if secret is None:
        return error(403, "the webhook is disabled: set CONTROLLER_WEBHOOK_SECRET to enable it")
    too_large = error(413, f"body larger than {WEBHOOK_MAX_BYTES} bytes")
    if request.content_length is not None and request.content_length > WEBHOOK_MAX_BYTES:
        return too_large
    given = header_bytes(request, "X-Hub-Signature-256")
    if given is None or not SIGNATURE.fullmatch(given):  # no body is read for these
        return error(401, "missing or invalid X-Hub-Signature-256")
    reading = request.app[BODY_READS_KEY]
    if reading.locked():  # a few slow senders must not hold every connection
        return error(503, "too many webhook deliveries at once; retry")
    async with reading:
        try:
            # the whole body, chunked or not: the app's client_max_size stops it past the limit
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large
        except web.RequestPayloadError:
            return error(400, "malformed body")
    expected = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given, b"sha256=" + expected.encode()):
        return error(401, "missing or invalid X-Hub-Signature-256")
    delivery = request.headers.get("X-GitHub-Delivery", "")[:128]
    keys = (f"body:{expected}", f"id:{delivery}") if delivery else (f"body:{expected}",)
    if request.app[DELIVERIES_KEY].seen_before(*keys):
        log.info("git webhook replayed or redelivered: ignored", delivery=delivery or None)
        return web.json_response({"message": "delivery already received"}, status=200)
    log.info("git webhook received", delivery=delivery or None)
    controller.request_pass(PassRequest(fetch_now=True))
    return web.json_response({"message": "fetch and reconcile requested"}, status=202)


# what a browser page of an allowed origin may read (the earlier system's frontend)
READABLE_ACROSS_ORIGINS = re.compile(r"/status|/infra/status|/environments/[^/]+/status")


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read endpoints answer an allowed origin (`CONTROLLER_CORS_ORIGINS`); nothing else does."""
    response = await handler(request)
    origin = request.headers.get("Origin", "").rstrip("/")
    if (
        origin
        and request.method in ("GET", "HEAD")
        and READABLE_ACROSS_ORIGINS.fullmatch(request.path)
        and origin in request.app[CONTROLLER_KEY].settings.allowed_origins
    ):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
    return response


def build_app(controller: Controller, guard: ConnectionGuard | None = None) -> web.Application:
    app = web.Application(
        client_max_size=WEBHOOK_MAX_BYTES,
        middlewares=[*([guard.middleware] if guard else []), cors],
    )
    app[CONTROLLER_KEY] = controller
    app[DELIVERIES_KEY] = RecentDeliveries()
    app[BODY_READS_KEY] = asyncio.Semaphore(WEBHOOK_BODIES_AT_ONCE)
    if guard is not None:
        app[GUARD_KEY] = guard
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/events", events)
    app.router.add_get("/environments/{name}/status", environment_status)
    app.router.add_post("/environments/{name}/wake", wake)
    add_override_routes(app)
    app.router.add_post("/reconcile", reconcile)
    app.router.add_post("/hooks/git", git_hook)
    return app


async def start_http_server(
    controller: Controller,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    max_connections: int | None = None,
) -> web.AppRunner:
    """Serve until `runner.cleanup()`. A connection is closed when its request headers are not
    complete `header_timeout` after it opened or after its previous answer (so also when idle
    that long between requests), and when reading the body and writing the answer takes over
    `body_timeout`. Past `max_connections` (default: from the open-file limit) a new connection
    drops the oldest one not inside a request."""
    guard = ConnectionGuard(max_connections or default_max_connections(), body_timeout)
    runner = web.AppRunner(
        build_app(controller, guard),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=header_timeout,
        # unread bodies are drained after the answer for this long at most
        lingering_time=min(body_timeout, 10.0),
        # the signature covers the bytes sent: never hash, nor inflate, a decompressed body
        auto_decompress=False,
    )
    await runner.setup()
    site = GuardedSite(runner, host, port, guard, backlog=listen_backlog())
    await site.start()
    log.info(
        "http server listening",
        address=f"{host}:{port}",
        max_connections=guard.max_connections,
    )
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (the configuration may ask for port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP server is not listening")
