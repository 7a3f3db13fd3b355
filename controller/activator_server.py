"""The activator (contract section 9): a second listener that serves waiting pages only.

While a service sleeps its load balancer routes reach this listener. A request names its
environment by its `Host`; the first one starts the wake at once, and every visitor gets a
`503` with `Retry-After`: a small page that refreshes itself (or JSON when asked for), with the
wait this environment's past wakes took. No status, no metrics, no API here: the port faces
the internet through the load balancer.
"""

from __future__ import annotations

import html
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web

from controller.activator_registration import (
    ActivatorTarget,
    RegistrationError,
    deregister,
    register,
    task_address,
)
from controller.core.aws import AwsClients
from controller.engine.activator_wakes import WaitingAnswer
from controller.engine.controller import Controller
from controller.http_guard import (
    ConnectionGuard,
    GuardedSite,
    default_max_connections,
    listen_backlog,
)

log = structlog.get_logger("infra_controller.activator")

HEADER_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 10.0
REFRESH_SECONDS = 5  # the page reloads itself this often while the service wakes
MAX_HOST_LENGTH = 253
CLIENT_RATE = 2.0  # requests a second a client may make, sustained
CLIENT_BURST = 20.0  # and at once
REMEMBERED_CLIENTS = 10_000
ACTIVATOR_KEY = web.AppKey("activator_controller", Controller)


class ClientLimits:
    """A token bucket per client address, for the most recently seen clients."""

    def __init__(
        self,
        rate: float = CLIENT_RATE,
        burst: float = CLIENT_BURST,
        size: int = REMEMBERED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate, self._burst, self._size, self._clock = rate, burst, size, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str) -> bool:
        now = self._clock()
        tokens, at = self._buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self._size:
            self._buckets.popitem(last=False)
        return allowed


LIMITS_KEY = web.AppKey("activator_limits", ClientLimits)


def request_host(request: web.Request) -> str | None:
    """The `Host` header's name, lower case, without port or final dot; None if malformed."""
    raw = request.headers.get("Host", "")
    if not raw or len(raw) > MAX_HOST_LENGTH + 6:
        return None
    host = raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw  # IPv6 literals keep theirs
    host = host.strip("[]").rstrip(".").lower()
    return host if host and len(host) <= MAX_HOST_LENGTH and host.isascii() else None


def client_of(request: web.Request) -> str:
    """The visitor's address: behind a load balancer, the last `X-Forwarded-For` entry (the one
    the load balancer added; earlier ones are the client's own claims)."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    last = forwarded.rsplit(",", 1)[-1].strip()[:64]
    return last or request.remote or "unknown"


@dataclass(frozen=True)
class _Page:
    status: int
    title: str
    message: str
    retry_after: int | None


def _page_for(answer: WaitingAnswer) -> _Page:
    if not answer.waking:
        return _Page(503, f"{answer.environment} is not available", answer.reason, None)
    left = max(answer.expected_seconds - answer.waited_seconds, 0)
    wait = f"about {_seconds(left)} left" if left else "any moment now"
    return _Page(
        503,
        f"{answer.environment} is waking up",
        f"It was asleep to save money, and your visit woke it: {wait} "
        f"(a wake usually takes {_seconds(answer.expected_seconds)}). "
        "This page reloads by itself.",
        min(max(left, 1), REFRESH_SECONDS),
    )


def _seconds(value: int) -> str:
    return f"{value} s" if value < 90 else f"{math.ceil(value / 60)} min"


def _render(page: _Page, answer: WaitingAnswer | None, wants_json: bool) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if page.retry_after is not None:
        headers["Retry-After"] = str(page.retry_after)
    if wants_json:
        body = {
            "environment": answer.environment if answer else None,
            "status": "waking" if answer and answer.waking else "unavailable",
            "message": page.message,
            "retry_after": page.retry_after,
            "expected_seconds": answer.expected_seconds if answer else None,
            "waited_seconds": answer.waited_seconds if answer else None,
        }
        return web.json_response(body, status=page.status, headers=headers)
    refresh = (
        f'<meta http-equiv="refresh" content="{page.retry_after}">' if page.retry_after else ""
    )
    text = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"{refresh}<title>{html.escape(page.title)}</title><style>"
        "body{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:15vh auto;padding:0 1em;"
        "color:#222}small{color:#777}</style></head><body>"
        f"<h1>{html.escape(page.title)}</h1><p>{html.escape(page.message)}</p>"
        "<p><small>infra-controller</small></p></body></html>"
    )
    return web.Response(
        text=text, status=page.status, content_type="text/html", charset="utf-8", headers=headers
    )


async def waiting_page(request: web.Request) -> web.Response:
    wants_json = "application/json" in request.headers.get("Accept", "")
    if not request.app[LIMITS_KEY].allow(client_of(request)):
        page = _Page(429, "Too many requests", "Slow down: this page reloads by itself.", 1)
        return _render(page, None, wants_json)
    host = request_host(request)
    activator = request.app[ACTIVATOR_KEY].activator
    name = activator.environment_for(host) if host else None
    if name is None and request.app[ACTIVATOR_KEY].snapshot().last_pass_completed_at is None:
        # just started: which names are whose is known after the first pass; come back
        page = _Page(503, "Starting", "The site is starting; this page reloads by itself.", 5)
        return _render(page, None, wants_json)
    if name is None:  # nothing is woken for a name no environment answers to
        page = _Page(
            404, "Unknown site", f"No environment answers for {host or 'this host'}.", None
        )
        return _render(page, None, wants_json)
    answer = activator.request(name, host or "")
    return _render(_page_for(answer), answer, wants_json)


def build_activator_app(
    controller: Controller, guard: ConnectionGuard | None = None
) -> web.Application:
    # no body is ever read: a waiting page needs none
    app = web.Application(client_max_size=1024, middlewares=[guard.middleware] if guard else [])
    app[ACTIVATOR_KEY] = controller
    app[LIMITS_KEY] = ClientLimits()
    app.router.add_route("*", "/{tail:.*}", waiting_page)
    return app


async def start_activator(controller: Controller, host: str, port: int) -> web.AppRunner:
    """Serve waiting pages until `runner.cleanup()`."""
    guard = ConnectionGuard(default_max_connections(), REQUEST_TIMEOUT_SECONDS)
    runner = web.AppRunner(
        build_activator_app(controller, guard),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=HEADER_TIMEOUT_SECONDS,
        lingering_time=1.0,
    )
    await runner.setup()
    site = GuardedSite(runner, host, port, guard, backlog=listen_backlog())
    await site.start()
    log.info("activator listening", address=f"{host}:{port}", max_connections=guard.max_connections)
    return runner


@asynccontextmanager
async def activator_running(
    controller: Controller, metadata_uri: str | None
) -> AsyncIterator[web.AppRunner | None]:
    """The activator while the daemon runs, when configured: listening, and on ECS registered
    in its target group (left at shutdown). A registration that fails is logged; the activator
    still serves whatever reaches it (a target registered by Terraform, for example)."""
    settings = controller.settings
    if settings.activator_addr is None or settings.activator_target_group is None:
        yield None
        return
    host, _, port = settings.activator_addr.rpartition(":")
    runner = await start_activator(controller, host.strip("[]"), int(port))
    target: ActivatorTarget | None = None
    aws: AwsClients | None = None
    try:
        if metadata_uri:
            try:
                address = await task_address(metadata_uri)
                target = ActivatorTarget(settings.activator_target_group, address, int(port))
                aws = AwsClients(target.region, controller.metrics.count_aws_call)
                await register(aws, target)
            except RegistrationError as exc:
                log.error("activator not registered in its target group", error=str(exc))
                target = None
        yield runner
    finally:
        if aws is not None:
            if target is not None:
                await deregister(aws, target)
            await aws.close()
        await runner.cleanup()
